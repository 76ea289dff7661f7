"""The matrix a user writes, validated and planned into cells: schema, configs, selectors, ids, cost, rehearsal."""
