"""The `sdpose-edge` sub-commands (run, eval, devices); edge_runtime.cli dispatches to them."""
