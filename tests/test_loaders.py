"""Every loader back end against the BatchLoader contract and the augmentation spec.

Each back end is checked against the spec itself (decoded from coordinate-encoded images),
never against another back end's output. Loaders are module-scoped: FFCV pays ~1-2 s of numba
compilation per loader.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from fastcifar.data.augmentation import AugmentationSpec
from fastcifar.data.loaders import LOADER_NAMES, LoaderOptions, MissingBackendError, make_loader
from fastcifar.records.config_checks import PAD_MODES
from tests.loader_helpers import (
    CUT,
    PAD,
    SIZE,
    build_loader,
    coordinate_split,
    decode_augmented,
    random_split,
    reference_augment,
    reference_normalise,
)

STATS_IMAGES, STATS_BATCH = 2048, 256
EXACT_IMAGES, EXACT_BATCH = 1000, 128  # 7 full batches and one of 104


def one_epoch(loader) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    batches = list(loader)
    images = torch.cat([images for images, _ in batches])
    labels = torch.cat([labels for _, labels in batches])
    return images, labels, [len(labels) for _, labels in batches]


@pytest.fixture(scope="module", params=LOADER_NAMES)
def augmented(request):
    split = coordinate_split(STATS_IMAGES)
    options = dict(batch_size=STATS_BATCH, augment=True, shuffle=True, seed=0)
    return build_loader(request.param, split, **options)


@pytest.fixture(scope="module", params=LOADER_NAMES)
def sequential(request):
    split = random_split(EXACT_IMAGES)
    return split, build_loader(request.param, split, batch_size=EXACT_BATCH)


@pytest.fixture(scope="module", params=LOADER_NAMES)
def shuffled_drop_last(request):
    split = random_split(EXACT_IMAGES, seed=1)
    options = dict(batch_size=EXACT_BATCH, shuffle=True, drop_last=True, seed=5)
    return split, build_loader(request.param, split, **options)


def test_batches_are_normalised_channels_last_float_with_int64_labels(augmented):
    batches = 0
    for images, labels in augmented:
        assert images.dtype == torch.float32 and images.shape[1:] == (3, SIZE, SIZE)
        assert images.is_contiguous(memory_format=torch.channels_last)
        assert labels.dtype == torch.int64 and labels.shape == (len(images),)
        assert images.device.type == labels.device.type == "cpu"
        batches += 1
    assert batches == len(augmented) == STATS_IMAGES // STATS_BATCH


def test_augmentation_follows_the_spec(augmented):
    images, labels, _ = one_epoch(augmented)
    assert sorted(labels.tolist()) == list(range(STATS_IMAGES))
    draws = decode_augmented(images)  # asserts crop/flip/padding/cutout geometry per image
    offsets = set(zip(draws.crop_row.tolist(), draws.crop_col.tolist(), strict=True))
    assert len(offsets) == (2 * PAD + 1) ** 2, "not all 81 crop offsets occur"
    # 5 standard deviations of a fair coin over 2,048 images is 0.055.
    assert abs(draws.flip.mean() - 0.5) < 0.055, f"flip rate {draws.flip.mean():.3f}"
    corners = SIZE - CUT + 1
    assert set(draws.cut_row.tolist()) == set(range(corners)), "cutout rows miss 0..24"
    assert set(draws.cut_col.tolist()) == set(range(corners)), "cutout cols miss 0..24"
    assert np.all(draws.cut_pixels[~draws.cut_clipped] == CUT * CUT)
    assert np.all(draws.cut_pixels[draws.cut_clipped] < CUT * CUT)
    assert draws.cut_clipped.mean() < 0.5  # most squares lie clear of the padding


@pytest.mark.parametrize("name", LOADER_NAMES)
def test_the_augmentation_settings_reach_every_loader(name):
    # --no-flip --crop-padding 2 --cutout 5, and no crops and no cutout at all.
    images = coordinate_split(512)
    for pad, cut in ((2, 5), (0, 0)):
        spec = AugmentationSpec(pad=pad, cutout_size=cut, flip_mode="none")
        loader = build_loader(name, images, batch_size=256, augment=True, shuffle=True, spec=spec)
        served, labels, _ = one_epoch(loader)
        draws = decode_augmented(served, pad=pad, cut_size=cut)
        assert not draws.flip.any(), "an image was flipped under --no-flip"
        offsets = set(zip(draws.crop_row.tolist(), draws.crop_col.tolist(), strict=True))
        assert len(offsets) == (2 * pad + 1) ** 2
        mine = labels.numpy()
        assigned, _ = loader.options.epoch(512, 0)
        if cut:
            whole = ~draws.cut_clipped
            assert np.array_equal(draws.cut_row[whole], assigned.cutout_row[mine][whole])


@pytest.mark.parametrize("pad_mode", PAD_MODES)
@pytest.mark.parametrize("name", LOADER_NAMES)
def test_every_served_pixel_is_the_specs_under_either_padding(name, pad_mode):
    # Random pixels, so that a pixel read from the wrong place cannot pass; the reference is
    # the spec written plainly with np.pad (whose "reflect" is torch's and airbench's).
    split = random_split(512, seed=3)
    spec = AugmentationSpec(pad=3, cutout_size=5, pad_mode=pad_mode)
    loader = build_loader(name, split, batch_size=256, augment=True, shuffle=True, spec=spec)
    loader.set_epoch(1)
    served, labels, _ = one_epoch(loader)
    draws, _ = loader.options.epoch(512, 1)
    expected = reference_augment(split.images, draws, labels.numpy(), spec)
    np.testing.assert_allclose(served.double().numpy(), expected, rtol=0, atol=1e-5)


def test_each_image_draws_its_own_augmentation(augmented):
    images, _, sizes = one_epoch(augmented)
    draws = decode_augmented(images)
    start = 0
    for size in sizes:
        batch = slice(start, start + size)
        assert 0 < draws.flip[batch].sum() < size, "one flip decision for a whole batch"
        assert len(set(draws.crop_row[batch].tolist())) > 1, "one crop for a whole batch"
        assert len(set(draws.cut_col[batch].tolist())) > 1, "one cutout for a whole batch"
        start += size


def test_each_image_gets_the_draws_its_epoch_assigns_to_it(augmented):
    # The draws belong to the image, not to where it is served: so the three back ends (and
    # a rank of torchrun) augment an image alike. The served order is the epoch's as well.
    augmented.set_epoch(3)
    images, labels, _ = one_epoch(augmented)
    assigned, order = augmented.options.epoch(STATS_IMAGES, 3)
    assert labels.tolist() == order.tolist()
    decoded, mine = decode_augmented(images), labels.numpy()
    assert np.array_equal(decoded.crop_row, assigned.crop_row[mine])
    assert np.array_equal(decoded.crop_col, assigned.crop_col[mine])
    assert np.array_equal(decoded.flip, assigned.flip[mine])
    whole = ~decoded.cut_clipped  # a square the padding clips has no visible corner to check
    assert np.array_equal(decoded.cut_row[whole], assigned.cutout_row[mine][whole])
    assert np.array_equal(decoded.cut_col[whole], assigned.cutout_col[mine][whole])


def test_each_epoch_draws_new_augmentations(augmented):
    def draws_by_example():
        images, labels, _ = one_epoch(augmented)
        draws = decode_augmented(images)
        order = labels.argsort().numpy()
        return np.stack([draws.crop_row, draws.crop_col, draws.cut_row, draws.flip])[:, order]

    first, second = draws_by_example(), draws_by_example()
    assert (first == second).all(axis=0).mean() < 0.05


def test_an_abandoned_epoch_does_not_disturb_the_next(augmented):
    for _ in augmented:
        break
    _, labels, _ = one_epoch(augmented)
    assert sorted(labels.tolist()) == list(range(STATS_IMAGES))


def test_a_new_epoch_is_complete_while_an_older_iterator_is_still_held(augmented):
    held = iter(augmented)
    next(held)
    _, labels, _ = one_epoch(augmented)
    assert sorted(labels.tolist()) == list(range(STATS_IMAGES))
    try:
        rest = list(held)
    except RuntimeError as error:  # ffcv and dali run one epoch at a time and say so
        assert "newer iteration" in str(error)
        return
    assert len(rest) == len(augmented) - 1


@pytest.mark.parametrize("name", LOADER_NAMES)
def test_a_split_smaller_than_one_batch_with_drop_last_gives_empty_epochs(name):
    loader = build_loader(name, random_split(10), batch_size=16, drop_last=True)
    assert len(loader) == 0 and list(loader) == [] and list(loader) == []


def test_without_augmentation_images_pass_unchanged_in_order(sequential):
    split, loader = sequential
    images, labels, sizes = one_epoch(loader)
    assert sizes == [EXACT_BATCH] * 7 + [EXACT_IMAGES - 7 * EXACT_BATCH] and len(loader) == 8
    assert labels.tolist() == list(range(EXACT_IMAGES))
    expected = reference_normalise(split.images)
    np.testing.assert_allclose(images.double().numpy(), expected, rtol=0, atol=1e-5)
    again, _, _ = one_epoch(loader)
    assert torch.equal(images, again)


def test_shuffled_epochs_are_seeded_permutations_without_the_last_partial_batch(shuffled_drop_last):
    split, loader = shuffled_drop_last
    assert len(loader) == EXACT_IMAGES // EXACT_BATCH
    orders = []
    for _ in range(2):
        images, labels, sizes = one_epoch(loader)
        assert sizes == [EXACT_BATCH] * len(loader)
        assert len(set(labels.tolist())) == len(labels), "an example repeats within an epoch"
        expected = reference_normalise(split.images[labels.numpy()])
        np.testing.assert_allclose(images.double().numpy(), expected, rtol=0, atol=1e-5)
        orders.append(labels.tolist())
    assert orders[0] != sorted(orders[0]) and orders[0] != orders[1]


@pytest.mark.parametrize("name", LOADER_NAMES)
def test_same_seed_gives_the_same_epochs_and_another_seed_does_not(name):
    split = coordinate_split(300)

    def two_epochs(seed):
        loader = build_loader(name, split, batch_size=64, augment=True, shuffle=True, seed=seed)
        return [one_epoch(loader)[:2] for _ in range(2)]

    (first_a, second_a), (first_b, second_b) = two_epochs(3), two_epochs(3)
    for left, right in ((first_a, first_b), (second_a, second_b)):
        assert torch.equal(left[0], right[0]) and torch.equal(left[1], right[1])
    assert not torch.equal(first_a[1], second_a[1])
    other, _ = two_epochs(4)
    assert not torch.equal(first_a[0], other[0])


@pytest.mark.parametrize(("name", "package"), [("ffcv", "ffcv"), ("dali", "nvidia.dali")])
def test_a_missing_backend_names_the_extra_to_install(name, package, monkeypatch):
    loaded = [module for module in sys.modules if module.startswith(package + ".")]
    for module in [package, *loaded]:
        monkeypatch.setitem(sys.modules, module, None)  # None makes `import` fail
    for ours in (f"fastcifar.data.loaders.{name}_loader", "fastcifar.data.loaders.beton"):
        monkeypatch.delitem(sys.modules, ours, raising=False)  # import them afresh
    options = LoaderOptions(batch_size=8, device=torch.device("cpu"))
    with pytest.raises(MissingBackendError, match=rf"pip install -e '\.\[{name}\]'"):
        make_loader(name, random_split(8), options)
