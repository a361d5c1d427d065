"""armstack_learning: ACT and Diffusion Policy models, training and ONNX export (torch).

Offline only: the policy node runs the exported ONNX graphs and never imports this package.
Modules: features (names, units, frames; no torch), normalize, data (LeRobot v3.0 windows),
layers, policy (the common interface), act, diffusion, factory, train, export.
"""
