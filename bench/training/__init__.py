"""The training interface methods describe (``Batch``, ``Training``, ``Computation``) and the machinery beneath
them: the engine, inference, the runtime, data parallelism, shared losses."""
