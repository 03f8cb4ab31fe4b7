"""Gateway backends: the official-module adapter (also over mt5linux and the simulator) and the Manager API seam."""
