"""Running a model on this machine: loading policy, the stock and quantized loaders, the
CPU and bitsandbytes expert kernels, placement over GPUs and system RAM, the hardware probe
and the size estimator. Every module here imports torch (or transformers) only inside
functions or is itself imported only on the load path, so ``mixchat doctor`` and the CLI
can import the pure parts without torch."""
