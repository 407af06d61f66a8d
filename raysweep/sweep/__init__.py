"""The sweep tree: its plan, the Optuna search, the warm slots that train it on Ray, and the
linear theory backend's tree."""
