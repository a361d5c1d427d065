import numpy as np
import pytest

from armstack_detector.preprocess import letterbox, stretch, to_blob

GREY = 114  # ultralytics' letterbox padding; models trained with it expect it


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("h", "w", "size", "scale", "pad_x", "pad_y"),
    [
        (480, 640, 320, 0.5, 0, 40),  # landscape: pad top/bottom
        (640, 480, 320, 0.5, 40, 0),  # portrait: pad left/right
        (320, 320, 320, 1.0, 0, 0),  # already the input size: no resize
        (240, 320, 640, 2.0, 0, 80),  # upscaling
    ],
)
def test_letterbox_geometry(h, w, size, scale, pad_x, pad_y):
    image = _image(h, w)
    out, tf = letterbox(image, (size, size))
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    assert (tf.scale_x, tf.scale_y, tf.pad_x, tf.pad_y) == (scale, scale, pad_x, pad_y)
    # Padding is the ultralytics grey on every pad row/column.
    if pad_y:
        assert (out[:pad_y] == GREY).all() and (out[size - pad_y :] == GREY).all()
    if pad_x:
        assert (out[:, :pad_x] == GREY).all() and (out[:, size - pad_x :] == GREY).all()
    if scale == 1.0:
        np.testing.assert_array_equal(out[pad_y : pad_y + h, pad_x : pad_x + w], image)


@pytest.mark.parametrize(
    ("h", "w", "size"), [(480, 640, 320), (640, 480, 320), (333, 500, 320), (97, 211, 640)]
)
def test_letterbox_places_content_where_transform_says(h, w, size):
    """A white rectangle drawn in the original lands where to_input maps its box."""
    image = np.zeros((h, w, 3), np.uint8)
    box = np.array([[w * 0.2, h * 0.3, w * 0.7, h * 0.9]]).round()
    x1, y1, x2, y2 = box[0].astype(int)
    image[y1:y2, x1:x2] = 255
    out, tf = letterbox(image, (size, size))
    ys, xs = np.nonzero(out[..., 0] > 127)
    found = np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
    np.testing.assert_allclose(found, tf.to_input(box)[0], atol=1.0)


@pytest.mark.parametrize(("h", "w"), [(480, 640), (640, 480), (333, 500)])
@pytest.mark.parametrize("resize", [letterbox, stretch])
def test_box_round_trip_is_exact(h, w, resize):
    _, tf = resize(_image(h, w), (320, 320))
    boxes = np.array(
        [[0, 0, w, h], [10.5, 20.25, 100.75, 200.5], [w - 50, h - 40, w, h]], np.float32
    )
    np.testing.assert_allclose(tf.to_original(tf.to_input(boxes)), boxes, atol=1e-3)


def test_stretch_scales_each_axis():
    out, tf = stretch(_image(480, 640), (320, 320))
    assert out.shape == (320, 320, 3)
    assert (tf.scale_x, tf.scale_y, tf.pad_x, tf.pad_y) == (0.5, 320 / 480, 0, 0)


def test_to_original_clips_into_image():
    _, tf = letterbox(_image(480, 640), (320, 320))
    # A box reaching into the top padding band and past the right edge.
    out = tf.to_original(np.array([[-10.0, 10.0, 400.0, 100.0]]))
    np.testing.assert_allclose(out, [[0.0, 0.0, 640.0, 120.0]])


def test_to_blob_layout_and_range():
    image = _image(4, 5)
    blob = to_blob(image)
    assert blob.shape == (1, 3, 4, 5) and blob.dtype == np.float32
    np.testing.assert_allclose(blob[0, 0], image[..., 0] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(blob[0, 2], image[..., 2] / 255.0, rtol=1e-6)
    assert to_blob(image, np.float16).dtype == np.float16


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 5), np.uint8),
        np.zeros((4, 5, 4), np.uint8),
        np.zeros((4, 5, 3), np.float32),
        np.zeros((0, 5, 3), np.uint8),
    ],
)
def test_bad_images_are_refused(bad):
    with pytest.raises(ValueError, match="image"):
        letterbox(bad, (320, 320))


def test_bad_input_size_is_refused():
    with pytest.raises(ValueError, match="input size"):
        stretch(_image(4, 5), (0, 320))
