"""Arrow and parsing kernels: column functions on pyarrow arrays and batches, testable without a pipeline."""
