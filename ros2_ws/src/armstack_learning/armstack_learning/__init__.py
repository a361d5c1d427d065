"""armstack_learning: ACT, Diffusion Policy and VLA models, training and ONNX export (torch).

Offline only: the policy node runs the exported ONNX graphs and never imports this package.
Modules: features (names, units, frames; no torch), normalize, data (LeRobot v3.0 windows),
layers, policy (the common interface), act, diffusion, vla (vision-language-action with
tokenized actions), factory, train, export, vla_export.
"""
