"""Zero-shot video (paper sec. 5.6): frames sampled and decoded with PyAV, the real annotation forms (the
release's MSRVTT JSON lines, MSRVTT's own JSON, MSRVTT-QA and MSVD-QA), real clips written by the tests, the
built-in world's clips checked against their truth, and both stages end to end through the CLI."""

import copy
import dataclasses
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from blip.params import params_from_dict
from blip.tasks.video.data import (
    VideoFormatError,
    ingest_clips,
    iter_clips,
    read_qa_files,
    read_retrieval_files,
)
from blip.tasks.video.evaluate import clip_embeds, clip_feat, median_rank
from blip.tasks.video.frames import VideoError, encode_clip, read_frames, uniform_indices
from blip.world.scene import COLOURS, scene_from_json
from blip.world.video import MOTIONS, world_clip
from tests.support import TEXT, downstream_workspace, raw_params, tiny


def _ramp(n: int, side: int = 32) -> list[np.ndarray]:
    """n frames, frame i a flat grey of level 10 * i (so a decoded frame tells its index)."""
    return [np.full((side, side, 3), 10 * i, np.uint8) for i in range(n)]


def _level(frame) -> int:
    return round(float(np.asarray(frame).mean()) / 10)


# ---------------------------------------------------------------------------------------- frames

def test_uniform_sampling_takes_the_first_frame_of_each_equal_segment_and_repeats_in_short_clips():
    assert uniform_indices(16, 8) == [0, 2, 4, 6, 8, 10, 12, 14]
    assert uniform_indices(100, 8) == [0, 12, 25, 37, 50, 62, 75, 87]
    assert uniform_indices(3, 8) == [0, 0, 0, 1, 1, 1, 2, 2]


def test_an_mp4_and_an_avi_decode_to_their_uniformly_sampled_frames():
    frames = _ramp(20)
    avi = encode_clip(frames, container_format="avi", codec="mpeg4")  # MSVD's container
    for name, data in (("clip.mp4", encode_clip(frames)), ("clip.avi", avi)):
        sampled = read_frames(data, 4, name)
        assert [_level(f) for f in sampled] == [0, 5, 10, 15], name
        assert sampled[0].size == (32, 32) and sampled[0].mode == "RGB"


def test_a_clip_that_is_not_a_video_is_refused_by_name():
    with pytest.raises(VideoError, match="broken.mp4: not a decodable video"):
        read_frames(b"\x00\x00\x00\x18ftypmp42 this is not a video", 8, "broken.mp4")
    with pytest.raises(VideoError, match="half.mp4"):
        read_frames(encode_clip(_ramp(20))[:300], 8, "half.mp4")


# ---------------------------------------------------------------------------------------- annotation forms

def test_the_release_msrvtt_json_lines_and_msrvtts_own_json_give_each_clip_its_captions(tmp_path):
    release = tmp_path / "msrvtt_test.jsonl"
    release.write_text('{"clip_name": "video7010", "caption": "a man is driving a car"}\n'
                       '{"clip_name": "video7011", "caption": "a dog runs"}\n')
    own = tmp_path / "videodatainfo.json"
    own.write_text(json.dumps({"videos": [{"video_id": "video1"}], "sentences": [
        {"video_id": "video1", "caption": "people dance", "sen_id": 0},
        {"video_id": "video1", "caption": "a group dances", "sen_id": 1}]}))
    assert read_retrieval_files([str(release), str(own)]) == {
        "video7010.mp4": ["a man is driving a car"], "video7011.mp4": ["a dog runs"],
        "video1.mp4": ["people dance", "a group dances"]}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"clip_name": "video1"}\n')
    with pytest.raises(VideoFormatError, match="bad.jsonl: a record without a clip name .* or a caption"):
        read_retrieval_files([str(bad)])


def test_msrvtt_qa_and_msvd_qa_name_their_clips_by_video_id(tmp_path):
    msrvtt = tmp_path / "test_qa.json"
    msrvtt.write_text(json.dumps([{"answer": "car", "id": 1, "question": "what is a man driving?", "video_id": 7010},
                                  {"answer": "man", "id": 2, "question": "who drives?", "video_id": 7010}]))
    got = read_qa_files([str(msrvtt)], "video{video_id}.mp4")
    assert list(got) == ["video7010.mp4"]
    assert got["video7010.mp4"][0] == {"question_id": 1, "question": "what is a man driving?", "answer": "car",
                                       "question_type": "what"}
    msvd = tmp_path / "msvd_test_qa.json"
    msvd.write_text(json.dumps([{"answer": "cat", "id": 5, "question": "what is playing?", "video_id": 2}]))
    mapping = tmp_path / "youtube_mapping.txt"
    mapping.write_text("-4wsuPCjDBc_5_15 vid1\n-7KMZQEsJW4_205_208 vid2\n")
    assert list(read_qa_files([str(msvd)], "{name}.avi", str(mapping))) == ["-7KMZQEsJW4_205_208.avi"]
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps([{"question": "what?", "video_id": 1}]))
    with pytest.raises(VideoFormatError, match="broken.json: a question without a usable 'answer'"):
        read_qa_files([str(broken)], "video{video_id}.mp4")


def test_clips_are_ingested_with_their_bytes_and_a_poster_and_missing_or_broken_clips_are_skipped_and_counted(
        tmp_path, params):
    videos = tmp_path / "videos"
    videos.mkdir()
    for i in range(4):
        (videos / f"video{i}.mp4").write_bytes(encode_clip(_ramp(10 + i)))
    (videos / "video8.mp4").write_bytes(b"not a video at all")
    annotations = {f"video{i}.mp4": [f"caption {i}"] for i in (0, 1, 2, 3, 8, 9)}
    cfg = dataclasses.replace(params.ingest, max_skip_fraction=0.5)
    manifest = ingest_clips("retrieval", annotations, str(videos), tmp_path / "out", cfg, shard_size=3)
    assert manifest["samples"] == 4 and manifest["captions"] == 4
    assert manifest["skipped"] == {"missing_file": 1, "undecodable_video": 1}
    clips = list(iter_clips(tmp_path / "out"))
    assert [m["video"] for _, _, m in clips] == ["video0.mp4", "video1.mp4", "video2.mp4", "video3.mp4"]
    assert clips[3][1] == (videos / "video3.mp4").read_bytes()  # the clip as it came
    with pytest.raises(Exception, match="more than ingest.max_skip_fraction"):
        ingest_clips("retrieval", annotations, str(videos), tmp_path / "strict", params.ingest, shard_size=3)


# ---------------------------------------------------------------------------------------- the built-in world

def _centroid(frame: np.ndarray, colour: str) -> np.ndarray | None:
    near = np.abs(frame.astype(int) - np.array(COLOURS[colour])).sum(-1) < 45
    return np.argwhere(near).mean(0) if near.sum() > 4 else None


def test_world_clips_move_each_object_one_cell_the_way_its_caption_and_answers_say(params):
    world = dataclasses.replace(params.world, image_size=96)
    checked = 0
    for index in range(12):
        scene, motions, mp4, _ = world_clip(world, 0, index, frames=16, fps=8)
        first, last = (np.asarray(f) for f in read_frames(mp4, 16)[::15])
        colours = [o.colour for o in scene.objects]
        for obj, motion in zip(scene.objects, motions):
            if colours.count(obj.colour) > 1 or obj.colour == "black":
                continue
            a, b = _centroid(first, obj.colour), _centroid(last, obj.colour)
            if a is None or b is None:
                continue
            (dy, dx), (mx, my) = b - a, MOTIONS[motion]
            assert np.sign(round(dx / 10)) == mx and np.sign(round(dy / 10)) == my, (index, obj, motion)
            checked += 1
    assert checked >= 8


def test_world_captions_and_questions_are_true_of_their_clips(tmp_path, params):
    from blip.world.video import write_clips

    raw = copy.deepcopy(raw_params())
    raw["world"]["video"].update(retrieval=6, qa=6, frames=4)
    p = params_from_dict(raw)
    write_clips("retrieval", p, tmp_path / "r")
    write_clips("qa", p, tmp_path / "q")
    for _, _, meta in iter_clips(tmp_path / "r"):
        scene = scene_from_json(meta["scene"])
        (caption,) = meta["captions"]
        for obj, motion in zip(scene.objects, meta["motions"]):
            assert f"{obj.colour} {obj.shape} moving" in caption
            assert {"left": "to the left", "right": "to the right"}.get(motion, motion) in caption
    qa_clips = list(iter_clips(tmp_path / "q"))
    assert {m["video"] for _, _, m in qa_clips}.isdisjoint({m["video"] for _, _, m in iter_clips(tmp_path / "r")})
    for _, _, meta in qa_clips:
        scene = scene_from_json(meta["scene"])
        for q in meta["questions"]:
            assert q["question_type"] not in ("row", "column", "left of")  # motion makes them false
            if q["question_type"] == "count":
                assert q["answer"] == str(len(scene.objects))
            if q["question_type"] == "motion":
                i = next(i for i, o in enumerate(scene.objects) if q["question"].endswith(f"{o.colour} {o.shape} move"))
                assert q["answer"] == meta["motions"][i]


# ---------------------------------------------------------------------------------------- the model on clips

def test_a_clips_frames_are_one_token_sequence_and_its_feature_the_normalised_mean_of_projected_cls():
    model, clips = tiny("filter").eval(), torch.randn(2, 3, 3, 32, 32)
    embeds = clip_embeds(model, clips)
    per_frame = model.image_embeds(clips[1])  # (3 frames, tokens, width)
    assert embeds.shape == (2, 3 * per_frame.shape[1], per_frame.shape[2])
    assert torch.allclose(embeds[1], per_frame.reshape(-1, per_frame.shape[2]), atol=1e-5)
    expected = F.normalize(model.vision_proj(per_frame[:, 0]).mean(0), dim=-1)
    assert torch.allclose(clip_feat(model, embeds, 3)[1], expected, atol=1e-5)


def test_median_rank_is_one_based_over_rows():
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.5, 0.4, 0.3]])
    assert median_rank(scores, torch.tensor([0, 0, 2])) == 2.0  # ranks 1, 2, 3


@pytest.mark.slow
def test_both_video_stages_score_each_model_zero_shot_through_the_cli(tmp_path):
    from blip.models.checkpoints import save_pretrained
    from blip.tokenizer import build_tokenizer

    raw = copy.deepcopy(raw_params())
    raw["world"]["video"].update(retrieval=10, qa=6, frames=4)
    raw["world"]["image_size"] = 32
    raw["downstream"]["video"]["retrieval"].update(frames=2, k_test=4)
    raw["downstream"]["video"]["qa"].update(frames=2, k_test=3)
    blip = downstream_workspace(tmp_path, raw)
    save_pretrained(tiny("filter"), tmp_path / "filter", build_tokenizer())
    save_pretrained(tiny("vqa", text=dataclasses.replace(TEXT, positions=64)), tmp_path / "vqa", build_tokenizer())
    (tmp_path / "vqa/answer_list.json").write_text(json.dumps(["yes", "no", "2", "red", "left"]))

    blip("video-data", "retrieval", "--out", "data/video_retrieval")
    out = blip("video", "retrieval", "--from", "baseline=filter", "bootstrapped=filter")
    result = json.loads((tmp_path / "metrics/downstream/video_retrieval.json").read_text())
    assert result["task"] == "video_retrieval" and result["chance"] == {"vid_r1": 10.0, "vid_mdR": 5.5}
    assert result["baseline"]["clips"] == 10 and 1 <= result["baseline"]["vid_mdR"] <= 10
    assert result["baseline"]["vid_r10"] == 100.0  # ten clips: every text finds its clip in the top ten
    assert result["baseline"]["vid_r1"] == result["bootstrapped"]["vid_r1"]  # the same model twice
    assert "zero-shot" in out

    blip("video-data", "qa", "--out", "data/video_qa")
    blip("video", "qa", "--from", "baseline=vqa", "bootstrapped=vqa")
    result = json.loads((tmp_path / "metrics/downstream/video_qa.json").read_text())
    questions = sum(len(m["questions"]) for _, _, m in iter_clips(tmp_path / "data/video_qa"))
    assert result["baseline"]["questions"] == questions and 0 <= result["baseline"]["accuracy"] <= 100
    assert set(result["baseline"]["per_question_type"]) == set(result["chance"]["type_prior_per_type"])
    with pytest.raises(AssertionError, match="answer list"):  # a retrieval model has none to rank
        blip("video", "qa", "--from", "baseline=filter")
