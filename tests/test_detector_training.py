"""The detector training pipeline of tools/detector_lib, on tiny sizes.

Geometry, augmentation, targets and the AP computation are checked on hand-made cases;
scene generation on a few renders; the network, loss, export and the runtime path
(OnnxDetector reading the exported model) with torch, when it is installed
(requirements-train.txt).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

from armstack_detector.decoders import Detections  # noqa: E402
from detector_lib.augment import AugmentConfig, random_view  # noqa: E402
from detector_lib.boxes import (  # noqa: E402
    Labels,
    cube_corners,
    face_samples,
    iou_matrix,
    view_cube,
)
from detector_lib.evaluate import average_precision, evaluate, match_image  # noqa: E402
from detector_lib.targets import TargetConfig, build_targets  # noqa: E402


@dataclass
class PinholeAtOrigin:
    """A camera at the world origin looking along +z (x right, y down), like the calibration."""

    width: int = 200
    height: int = 100
    f: float = 100.0
    cx: float = 99.5
    cy: float = 49.5
    translation: np.ndarray = field(default_factory=lambda: np.zeros(3))

    def project(self, points: np.ndarray) -> np.ndarray:
        p = np.atleast_2d(points)
        return np.stack([self.f * p[:, 0] / p[:, 2] + self.cx,
                         self.f * p[:, 1] / p[:, 2] + self.cy, p[:, 2]], 1)


def labels(boxes, classes, ignore=None) -> Labels:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    n = len(boxes)
    return Labels(boxes, np.asarray(classes, np.int64),
                  np.zeros(n, bool) if ignore is None else np.asarray(ignore, bool),
                  np.ones(n, np.float32))


# ------------------------------------------------------------------------------ geometry


def test_cube_corners_and_faces_follow_the_rotation():
    quarter = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 deg about z
    corners = cube_corners(np.array([1.0, 2.0, 3.0]), quarter, 0.2)
    assert corners.shape == (8, 3)
    np.testing.assert_allclose(corners.min(0), [0.9, 1.9, 2.9])
    np.testing.assert_allclose(corners.max(0), [1.1, 2.1, 3.1])
    points, normals = face_samples(np.zeros(3), quarter, 0.2, per_side=3)
    assert points.shape == normals.shape == (54, 3)
    # Every sample lies on its face: 0.1 from the centre along the face's outward normal.
    np.testing.assert_allclose(np.einsum("ij,ij->i", points, normals), 0.1)
    assert np.all(np.abs(points) <= 0.1 + 1e-12)


def test_view_cube_box_is_the_tight_box_in_pixel_edges():
    cam = PinholeAtOrigin()
    depth = np.full((cam.height, cam.width), 0.95, np.float32)  # the front face, unoccluded
    view = view_cube(cam, depth, np.array([0.0, 0.0, 1.0]), np.eye(3), 0.1, 0.004)
    # Nearest corners at z 0.95, x +-0.05: u = 100 * +-0.05 / 0.95 + 99.5, +0.5 to pixel edges.
    half = 100.0 * 0.05 / 0.95
    np.testing.assert_allclose(view.box, [100 - half, 50 - half, 100 + half, 50 + half],
                               atol=1e-4)
    assert view.visible == pytest.approx(1.0)
    assert view.in_frame == pytest.approx(1.0)


def test_view_cube_counts_occluded_and_out_of_frame_surface():
    cam = PinholeAtOrigin()
    depth = np.full((cam.height, cam.width), 0.95, np.float32)
    depth[:, :100] = 0.5  # something nearer covers the left half of the cube
    view = view_cube(cam, depth, np.array([0.0, 0.0, 1.0]), np.eye(3), 0.1, 0.004)
    assert view.visible == pytest.approx(0.5)
    # Narrow view, cube centred on the right image edge: its box is cut there and the
    # right half of its front face (the only face turned to the camera) is out of frame.
    tele = PinholeAtOrigin(height=200, f=1000.0, cy=99.5)
    centre = np.array([(tele.width - tele.cx - 0.5) / tele.f, 0.0, 1.0])
    edge = view_cube(tele, np.full((200, 200), 0.95), centre, np.eye(3), 0.1, 0.004)
    u = tele.project(cube_corners(centre, np.eye(3), 0.1))[:, 0] + 0.5
    assert edge.box[2] == tele.width
    assert edge.in_frame == pytest.approx((tele.width - u.min()) / (u.max() - u.min()))
    assert edge.visible == pytest.approx(0.5)
    assert view_cube(cam, depth, np.array([0.0, 0.0, -1.0]), np.eye(3), 0.1, 0.004) is None


def test_iou_matrix():
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    np.testing.assert_allclose(iou_matrix(a, b), [[1.0, 1 / 3, 0.0]] * 2)


# ------------------------------------------------------------------------------ augmentation

NO_PHOTOMETRIC = dict(brightness=0.0, contrast=0.0, channel_gain=0.0, noise_sigma=0.0, blur=0.0)


def _white_box_image() -> tuple[np.ndarray, Labels]:
    image = np.zeros((480, 640, 3), np.uint8)
    image[200:240, 300:360] = 255
    return image, labels([[300, 200, 360, 240]], [1])


@pytest.mark.parametrize("flip", [0.0, 1.0])
def test_random_view_moves_boxes_with_the_pixels(flip):
    image, lab = _white_box_image()
    cfg = AugmentConfig(crop=256, main_share=1.0, main_jitter=(1.0, 1.0), flip=flip,
                        **NO_PHOTOMETRIC)
    for seed in range(5):
        view, out = random_view(image, lab, cfg, np.random.default_rng(seed))
        assert view.shape == (256, 256, 3) and view.dtype == np.uint8
        if len(out.boxes) == 0:
            continue  # cropped away
        x1, y1, x2, y2 = np.round(out.boxes[0]).astype(int)
        assert (x2 - x1, y2 - y1) == (30, 20) or out.ignore[0]  # scale 0.5
        inner = view[y1 + 1 : y2 - 1, x1 + 1 : x2 - 1]
        assert inner.size and inner.min() > 200
        # Outside the box: black image or grey padding, never white.
        outside = view.copy()
        outside[max(y1 - 1, 0) : y2 + 1, max(x1 - 1, 0) : x2 + 1] = 0
        assert outside.max() <= 114


def test_random_view_ignores_boxes_cut_by_the_crop():
    image, lab = _white_box_image()
    cfg = AugmentConfig(crop=64, main_share=1.0, main_jitter=(1.0, 1.0), flip=0.0,
                        **NO_PHOTOMETRIC)
    seen = set()
    for seed in range(200):
        _, out = random_view(image, lab, cfg, np.random.default_rng(seed))
        for box, ignored in zip(out.boxes, out.ignore, strict=True):
            kept = (box[2] - box[0]) * (box[3] - box[1]) / (30 * 20)
            assert ignored == (kept < cfg.min_kept_area - 1e-3) or abs(kept - 0.45) < 0.02
            seen.add(bool(ignored))
    assert seen == {False, True}


# ------------------------------------------------------------------------------ targets


def test_targets_one_positive_per_box_and_ignored_regions():
    cfg = TargetConfig(stride=8)
    lab = labels([[20, 20, 44, 44], [60, 8, 90, 30]], [0, 2], ignore=[False, True])
    t = build_targets(lab, (64, 128), 3, cfg)
    assert t.heat.shape == (3, 8, 16) and t.box.shape == (4, 8, 16)
    assert np.argwhere(t.heat == 1.0).tolist() == [[0, 4, 4]]  # centre (32, 32) -> cell (4, 4)
    assert t.heat[1:].max() == 0.0  # the ignored box makes no positive
    assert t.ignore[2].sum() == 12 and t.ignore[2, 1:4, 7:11].all()  # centres in the box
    assert not t.ignore[:2].any()
    # The cells that regress box 0 are around its centre and carry the whole box.
    assert t.box_mask[4, 4] and t.box_mask.sum() >= 4
    np.testing.assert_allclose(t.box[:, t.box_mask].T, [[20, 20, 44, 44]] * t.box_mask.sum())
    assert not t.box_mask[:, 7:].any()


def test_targets_overlapping_boxes_regress_the_nearest():
    lab = labels([[0, 0, 40, 40], [24, 0, 64, 40]], [0, 1])
    t = build_targets(lab, (40, 64), 2, TargetConfig(stride=8, center_region=1.0))
    left, right = t.box[:, 2, 1], t.box[:, 2, 6]
    np.testing.assert_allclose(left, [0, 0, 40, 40])
    np.testing.assert_allclose(right, [24, 0, 64, 40])


# ------------------------------------------------------------------------------ AP


def test_average_precision_of_known_curves():
    assert average_precision(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == pytest.approx(1.0)
    # One hit then one false positive: the curve reaches recall 0.5 at precision 1.
    assert average_precision(np.array([0.5, 0.5]), np.array([1.0, 0.5])) == pytest.approx(0.5)
    # A false positive ranked first: precision 0.5 from recall 0 to 1 (the envelope).
    assert average_precision(np.array([0.0, 1.0]), np.array([0.0, 0.5])) == pytest.approx(0.5)


def test_match_image_duplicates_and_ignored_boxes():
    gt = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [100, 100, 110, 110]])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    outcome = match_image(boxes, scores, gt, np.array([False, True]), 0.5)
    assert outcome.tolist() == [1, 0, -1, 0]  # hit, duplicate, on an ignored cube, stray


def _dets(boxes, scores, classes) -> Detections:
    return Detections(np.asarray(boxes, np.float32).reshape(-1, 4),
                      np.asarray(scores, np.float32), np.asarray(classes, np.int64))


def test_evaluate_per_class_ap_with_ignore():
    names = ("red_cube", "green_cube", "blue_cube")
    truth = [labels([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1]),
             labels([[0, 0, 10, 10], [40, 40, 50, 50]], [0, 1], ignore=[False, True])]
    preds = [
        # red found; green found but outscored by a stray green box
        _dets([[0, 0, 10, 10], [20, 20, 30, 30], [70, 70, 80, 80]], [0.9, 0.5, 0.8], [0, 1, 1]),
        # red found with a shifted box (IoU 0.82); green only on the ignored cube
        _dets([[1, 0, 11, 10], [40, 40, 50, 50]], [0.6, 0.9], [0, 1]),
    ]
    result = evaluate(preds, truth, names, iou=0.5, threshold=0.7)
    red, green, blue = (result.per_class[n] for n in names)
    assert red.ap == pytest.approx(1.0) and red.num_gt == 2
    assert green.ap == pytest.approx(0.5) and green.num_gt == 1
    assert math.isnan(blue.ap) and blue.num_gt == 0
    assert result.mean_ap == pytest.approx(0.75)
    assert (red.precision, red.recall) == (1.0, 0.5)  # only the 0.9 box is above 0.7
    assert (green.precision, green.recall) == (0.0, 0.0)


# ------------------------------------------------------------------------------ scenes


@pytest.fixture(scope="module")
def tiny_scenes():
    pytest.importorskip("mujoco")
    from detector_lib.scenes import SceneConfig, generate

    config = SceneConfig(episodes_per_world=3, frames_per_expert_episode=2,
                         expert_frame_gap=(0.3, 0.5))
    return config, generate(config, seed=7, num_images=6)


def test_generated_scenes_are_labelled_and_repeatable(tiny_scenes):
    from detector_lib.scenes import generate

    config, data = tiny_scenes
    assert data.images.shape == (6, 480, 640, 3) and len(data.labels) == 6
    assert data.class_names == config.class_names
    assert all(s // 100_000 == 7 for s in data.episode_seeds)
    boxes = np.concatenate([lab.boxes for lab in data.labels])
    assert len(boxes) >= 6 and np.all(boxes >= 0) and np.all(boxes[:, 2] <= 640)
    # A labelled cube's box holds pixels of its colour.
    lab, image = data.labels[0], data.images[0].astype(int)
    for box, cls, ignored in zip(lab.boxes, lab.classes, lab.ignore, strict=True):
        if ignored:
            continue
        x1, y1, x2, y2 = np.round(box).astype(int)
        patch = image[y1:y2, x1:x2].reshape(-1, 3)
        channel = {"red": 0, "green": 1, "blue": 2}.get(config.class_colors[cls])
        if channel is not None:
            assert np.sum(patch.argmax(1) == channel) > 0.2 * len(patch)
    again = generate(config, seed=7, num_images=2)
    np.testing.assert_array_equal(again.images, data.images[:2])
    assert generate(config, seed=8, num_images=2).digest() != again.digest()


def test_scene_config_errors_name_the_field():
    from detector_lib.scenes import SceneConfig

    with pytest.raises(ValueError, match="scene_colors"):
        SceneConfig(scene_colors=("red", "teal"))
    with pytest.raises(ValueError, match="workspace_y"):
        SceneConfig(workspace_y=(0.2, 0.1))
    assert SceneConfig.runtime().scene_colors == ("red", "green", "blue")


# ------------------------------------------------------------------------------ torch parts


@pytest.fixture(scope="module")
def torch_lib():
    return pytest.importorskip("torch")


def test_network_shapes_and_untrained_decode(torch_lib):
    from detector_lib.model import CubeNet, CubeNetConfig, YoloRawExport

    net = CubeNet(CubeNetConfig(num_classes=3, widths=(4, 4, 8, 8), head_width=8)).eval()
    with torch_lib.no_grad():
        raw = net(torch_lib.zeros(2, 3, 64, 96))
        out = YoloRawExport(net, peaks_only=False)(torch_lib.zeros(1, 3, 64, 96))
    assert raw.shape == (2, 7, 8, 12)
    assert out.shape == (1, 7, 96)
    # Zero-initialised prediction weights: every cell a box of softplus(0.6) * 8 each side,
    # centred on the cell, and the prior score.
    side = 2 * math.log1p(math.exp(0.6)) * 8
    np.testing.assert_allclose(out[0, 2:4].numpy(), side, rtol=1e-5)
    np.testing.assert_allclose(out[0, 0, :3].numpy(), [4, 12, 20], rtol=1e-5)
    np.testing.assert_allclose(out[0, 1, ::12].numpy(), np.arange(8) * 8 + 4, rtol=1e-5)
    np.testing.assert_allclose(out[0, 4:].numpy(), 0.01, rtol=1e-4)


def test_giou_loss(torch_lib):
    from detector_lib.loss import giou_loss

    a = torch_lib.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    b = torch_lib.tensor([[0.0, 0, 10, 10], [0, 0, 20, 10], [20, 0, 30, 10]])
    np.testing.assert_allclose(giou_loss(a, b).numpy(), [0.0, 0.5, 1 + 10 / 30], rtol=1e-6)


def test_training_fits_a_tiny_set_and_exports_for_the_runtime(torch_lib, tmp_path):
    from armstack_detector.onnx_runner import DetectorConfig, OnnxDetector
    from armstack_detector.preprocess import letterbox, to_blob
    from detector_lib.export import export_error, export_onnx
    from detector_lib.model import CubeNetConfig
    from detector_lib.scenes import Dataset
    from detector_lib.train import TrainConfig, train

    rng = np.random.default_rng(0)
    images = rng.integers(90, 140, (4, 96, 128, 3)).astype(np.uint8)
    truth = []
    for i, image in enumerate(images):  # one red and one blue square per image
        x, y = 16 + 8 * i, 24
        image[y : y + 16, x : x + 16] = (220, 20, 20)
        image[y + 32 : y + 48, x + 48 : x + 64] = (20, 40, 220)
        truth.append(labels([[x, y, x + 16, y + 16], [x + 48, y + 32, x + 64, y + 48]], [0, 1]))
    data = Dataset(images, truth, ("red_cube", "blue_cube"))
    net_config = CubeNetConfig(num_classes=2, widths=(8, 8, 16, 16), head_width=16)
    cfg = TrainConfig(steps=60, batch_size=4, lr=1e-2, warmup_steps=5,
                      log_every=20,
                      augment=AugmentConfig(crop=64, main_scale=1.0, main_share=1.0,
                                            main_jitter=(1.0, 1.0), **NO_PHOTOMETRIC))
    result = train(data, net_config, cfg)
    losses = [entry["loss"] for entry in result.history]
    assert losses[-1] < 0.6 * losses[0]

    path = tmp_path / "det.onnx"
    export_onnx(result.model, path, 128, data.class_names, {"license": "Apache-2.0"})
    blob = to_blob(letterbox(images[0], (128, 128))[0])
    assert export_error(result.model, path, blob) < 1e-4
    detector = OnnxDetector(DetectorConfig(model_path=str(path), conf_threshold=0.01))
    assert detector.layout == "yolo_raw" and detector.input_hw == (128, 128)
    assert detector.class_names == {0: "red_cube", 1: "blue_cube"}
    detections, _ = detector.detect(images[0])
    assert detections.boxes.shape[1] == 4 and np.all(detections.class_ids < 2)


def test_model_card_reports_the_measured_numbers():
    pytest.importorskip("torch")  # card imports the training configs
    from detector_lib.card import CardInfo, DataSummary, render_card
    from detector_lib.model import CubeNetConfig
    from detector_lib.scenes import SceneConfig
    from detector_lib.train import TrainConfig

    names = ("red_cube", "green_cube")
    truth = [labels([[0, 0, 10, 10], [20, 20, 30, 30]], [0, 1])]
    preds = [_dets([[0, 0, 10, 10], [60, 60, 70, 70]], [0.9, 0.8], [0, 1])]
    result = evaluate(preds, truth, names)
    info = CardInfo(
        class_names=names, files={320: ("detector.onnx", 2048)}, parameters=1234,
        command="python tools/train_detector.py --steps 7",
        data=[DataSummary("train", 1, 5, {"red_cube": (4, 1), "green_cube": (3, 0)}, "ab" * 32,
                          "test scenes")],
        scene=SceneConfig(class_colors=("red", "green"), max_cubes=2),
        net=CubeNetConfig(num_classes=2), train=TrainConfig(steps=7), train_seconds=1.0,
        generate_seconds=2.0, total_seconds=3.0, cpu_seconds=4.0,
        final_loss={"loss": 0.5, "cls": 0.25, "box": 0.125, "step": 7},
        evaluations={("held-out", 320): result}, latency_ms={320: 5.5},
        machine="2 cores, test CPU", versions="test")
    card = render_card(info)
    assert "| red_cube | 1.0000 (1) |" in card and "| green_cube | 0.0000 (1) |" in card
    assert "| **mean AP@0.5** | **0.5000** |" in card
    assert "python tools/train_detector.py --steps 7" in card
    assert "7 steps of 32" in card and "`abababababababab`" in card
    assert "0: `red_cube`, 1: `green_cube`" in card
