"""Execution: how units of work run (local threads or processes now, Dask later)."""
