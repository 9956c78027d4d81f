import pytest
import torch

from blip.data.loader import build_loader
from blip.data.selected import training_data
from blip.data.transforms import BLIP_RANDAUGMENT_OPS, BlipRandAugment, build_transform


def _loader(prepared, small, which="human/train", train=True, workers=2, **kw):
    """A loader over one of the small world's datasets (the web set: registered, read in place by the web rules)."""
    data = training_data([str(prepared / which)], small.ingest)
    tf = build_transform("pretrain" if train else "eval", 32, small.loader)
    return build_loader(data.shards, tf, 8, train=train, seed=small.seed, num_workers=workers,
                        max_words=small.ingest.max_words, shuffle_buffer=50, shuffle_initial=10, joiner=data.joiner,
                        **kw)


def _keys(loader) -> list[str]:
    return [k for batch in loader for k in batch.keys]


def test_train_batches_have_images_and_clean_captions(prepared, small):
    torch.manual_seed(0)
    loader, _ = _loader(prepared, small)
    batch = next(iter(loader))
    assert batch.images.shape == (8, 3, 32, 32) and batch.images.dtype == torch.float32
    assert all(c and c == c.lower() for c in batch.captions)
    # a human sample's caption is one of its five
    for caption, meta in zip(batch.captions, batch.meta):
        assert caption in meta["captions"]


def test_same_seed_same_batches_new_epoch_new_order(prepared, small):
    torch.manual_seed(0)
    loader, epoch = _loader(prepared, small)
    first = [(b.keys, b.images) for b in loader]
    torch.manual_seed(0)
    again, _ = _loader(prepared, small)
    second = [(b.keys, b.images) for b in again]
    assert [k for k, _ in first] == [k for k, _ in second]
    assert all(torch.equal(a, b) for (_, a), (_, b) in zip(first, second))
    epoch.set(1)
    third = _keys(loader)
    # training drops each worker's last partial batch, so an epoch holds whole batches of distinct samples
    assert len(third) == len(set(third)) == sum(len(k) for k, _ in first)
    assert third != [k for keys, _ in first for k in keys]


def test_eval_split_across_ranks_and_workers_covers_everything_once(prepared, small, monkeypatch):
    everything = _keys(_loader(prepared, small, "web", train=False, workers=0)[0])
    assert len(everything) == 120
    seen = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        seen.append(_keys(_loader(prepared, small, "web", train=False, workers=2)[0]))
    assert set(seen[0]).isdisjoint(seen[1])
    assert sorted(seen[0] + seen[1]) == sorted(everything)


def test_resampled_mode_is_epochless_and_rank_specific(prepared, small, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    streams = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        loader, _ = _loader(prepared, small, "web", resampled=True, batches_per_epoch=5)
        batches = list(loader)
        assert len(batches) == 5 and all(len(b.keys) == 8 for b in batches)
        streams.append([k for b in batches for k in b.keys])
    assert streams[0] != streams[1]
    monkeypatch.setenv("RANK", "0")
    again = [k for b in _loader(prepared, small, "web", resampled=True, batches_per_epoch=5)[0] for k in b.keys]
    assert again == streams[0]


def test_too_few_shards_for_the_workers_is_an_error(prepared, small, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ValueError, match="cannot feed 4 ranks x 2 workers"):
        _loader(prepared, small, "human/train", train=False)


def test_transforms(small):
    from PIL import Image

    img = Image.new("RGB", (120, 80), (200, 30, 30))
    assert build_transform("eval", 48, small.loader)(img).shape == (3, 48, 48)
    pre, fine = build_transform("pretrain", 48, small.loader), build_transform("finetune", 48, small.loader)
    assert pre.transforms[0].scale == small.loader.pretrain_crop_scale
    assert fine.transforms[0].scale == small.loader.finetune_crop_scale
    assert pre(img).shape == (3, 48, 48)
    aug = BlipRandAugment(2, 5)
    assert set(aug._augmentation_space(11, (48, 48))) == set(BLIP_RANDAUGMENT_OPS)
    assert "Solarize" not in BLIP_RANDAUGMENT_OPS and "Color" not in BLIP_RANDAUGMENT_OPS
    # normalised with CLIP's statistics: a mid-grey image is near zero
    grey = build_transform("eval", 8, small.loader)(Image.new("RGB", (8, 8), (123, 117, 104)))
    assert grey.abs().max() < 0.05


def test_skipping_batches_resumes_exactly_where_an_epoch_left_off(prepared, small):
    full, _ = _loader(prepared, small, "web", resampled=True, batches_per_epoch=6)
    batches = list(full)
    resumed, _ = _loader(prepared, small, "web", resampled=True, batches_per_epoch=6, skip_batches=3)
    rest = list(resumed)
    assert len(rest) == 3
    for a, b in zip(batches[3:], rest):
        assert a.keys == b.keys and torch.equal(a.images, b.images)
