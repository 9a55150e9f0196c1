"""The transports (gRPC) and the engine behind them. Importing this package
changes nothing in the process; `runtime.configure_process()` does, at start-up."""
