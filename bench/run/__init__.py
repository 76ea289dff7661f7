"""One cell run end to end: context, method, engine, result, DONE."""
