"""Training of armstack's cube detector on simulator renders (tools/train_detector.py).

Modules, in pipeline order:
- `boxes`: cube geometry -> tight 2D boxes and visible fractions (numpy only);
- `scenes`: randomized scenes rendered by armstack_sim, labelled from the true poses;
- `augment`: random scale / crop / flip / photometric views for training (numpy, cv2);
- `targets`: per-cell heatmap and box targets of the network's stride-8 grid;
- `model`: the network and its export wrapper with the `yolo_raw` output (torch);
- `loss`: focal heatmap loss and GIoU box loss (torch);
- `train`: the training loop;
- `export`: ONNX export with ultralytics-style metadata, checked against torch;
- `evaluate`: VOC-style AP and the held-out evaluation through OnnxDetector;
- `card`: the model card written beside the exported model.

torch is needed by `model`, `loss`, `train` and `export` only (requirements-train.txt);
the runtime needs none of this package.
"""
