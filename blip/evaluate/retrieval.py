"""Image-text retrieval as the paper evaluates it: ITC similarities pick the top-k candidates, the ITM
head re-ranks them (score = ITM match logit + ITC similarity), the rest rank below. TR@k: an image
finds one of its captions in its top k; IR@k: a caption finds its image in its top k.
"""

from __future__ import annotations

import torch
import torch.distributed

from blip.evaluate.common import EvalSet, batched_images
from blip.tokenizer import ENC_ID, tokenize


@torch.no_grad()
def retrieval_scores(model, tokenizer, data: EvalSet, transform, k_test: int, text_len: int = 35,
                     batch_size: int = 64, rank: int = 0,
                     world: int = 1) -> tuple[torch.Tensor, torch.Tensor, list[int], torch.Tensor]:
    """(image->text scores (N_img, N_txt), text->image scores (N_txt, N_img), image index of each text,
    the ITC similarities alone). With several ranks (a process group), each re-ranks every `world`-th
    row with ITM, the costly part, as the release does; every rank ends with the whole result."""
    device = next(model.parameters()).device
    texts = [c for caps in data.captions for c in caps]
    txt2img = [i for i, caps in enumerate(data.captions) for _ in caps]
    embeds, image_feat = [], []
    for _, images in batched_images(data.images, transform, batch_size, device):
        e = model.image_embeds(images)
        embeds.append(e)
        image_feat.append(model.image_feat(e))
    i2t, t2i, sims = rerank(model, tokenizer, torch.cat(embeds), torch.cat(image_feat), texts, k_test, text_len,
                            batch_size, rank, world)
    return i2t, t2i, txt2img, sims


@torch.no_grad()
def rerank(model, tokenizer, image_embeds: torch.Tensor, image_feat: torch.Tensor, texts: list[str], k_test: int,
           text_len: int = 35, batch_size: int = 64, rank: int = 0,
           world: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(image->text, text->image, ITC similarities) of encoded images (or clips: their frames' tokens joined)
    against texts: ITC's top k of each row re-scored as ITM match logit + similarity, the rest at -100."""
    device = image_embeds.device
    ids, mask = tokenize(tokenizer, texts, text_len)
    ids, mask = ids.to(device), mask.to(device)
    text_feat = torch.cat([model.text_feat(ids[s:s + batch_size], mask[s:s + batch_size])
                           for s in range(0, len(texts), batch_size)])
    sims = (image_feat @ text_feat.T).float()  # (N_img, N_txt); fp32 for the ranking, whatever the autocast
    enc_ids = ids.clone()
    enc_ids[:, 0] = ENC_ID

    def itm_logit(img_idx: torch.Tensor, txt_idx: torch.Tensor) -> torch.Tensor:
        out = []
        for s in range(0, len(img_idx), batch_size):
            i, t = img_idx[s:s + batch_size], txt_idx[s:s + batch_size]
            out.append(model.itm_logits(image_embeds[i], enc_ids[t], mask[t])[:, 1])
        return torch.cat(out)

    k_i2t, k_t2i = min(k_test, sims.shape[1]), min(k_test, sims.shape[0])
    i2t = torch.full_like(sims, -100.0)
    for i in range(rank, sims.shape[0], world):
        top_sim, top = sims[i].topk(k_i2t)
        i2t[i, top] = itm_logit(torch.full_like(top, i), top).float() + top_sim
    t2i = torch.full_like(sims.T, -100.0)
    for t in range(rank, sims.shape[1], world):
        top_sim, top = sims[:, t].topk(k_t2i)
        t2i[t, top] = itm_logit(top, torch.full_like(top, t)).float() + top_sim
    if world > 1:  # each row was filled by one rank; the others hold -100 there, below any score
        torch.distributed.all_reduce(i2t, op=torch.distributed.ReduceOp.MAX)
        torch.distributed.all_reduce(t2i, op=torch.distributed.ReduceOp.MAX)
    return i2t.cpu(), t2i.cpu(), sims.cpu()


def recall_at_k(i2t: torch.Tensor, t2i: torch.Tensor, txt2img: list[int]) -> dict:
    """TR@1/5/10, IR@1/5/10 in percent, named as the release: txt_r1 ... img_r10, and r_mean."""
    txt2img_t = torch.tensor(txt2img)
    # rank of the best-ranked correct caption for each image
    order = i2t.argsort(dim=1, descending=True)
    correct = txt2img_t[order] == torch.arange(i2t.shape[0]).unsqueeze(1)
    tr_rank = correct.float().argmax(dim=1)
    ir_rank = (t2i.argsort(dim=1, descending=True) == txt2img_t.unsqueeze(1)).float().argmax(dim=1)
    out = {}
    for k in (1, 5, 10):
        out[f"txt_r{k}"] = 100.0 * (tr_rank < k).float().mean().item()
        out[f"img_r{k}"] = 100.0 * (ir_rank < k).float().mean().item()
    out["r_mean"] = sum(out.values()) / 6
    return out


def evaluate_retrieval(model, tokenizer, data: EvalSet, transform, k_test: int, text_len: int = 35, rank: int = 0,
                       world: int = 1) -> dict:
    """Retrieval recalls of a filter (or pre-trained) model on an evaluation set (this rank's share of it)."""
    i2t, t2i, txt2img, sims = retrieval_scores(model, tokenizer, data, transform, k_test, text_len, rank=rank,
                                               world=world)
    metrics = recall_at_k(i2t, t2i, txt2img)
    itc_only = {f"itc_{k}": v for k, v in recall_at_k(sims, sims.T.contiguous(), txt2img).items()}
    return {**metrics, **itc_only, "k_test": k_test, "chance_txt_r1": 100.0 * len(data.captions[0]) / max(1, len(txt2img)),
            "chance_img_r1": 100.0 / max(1, len(data.keys)), "images": len(data.keys), "texts": len(txt2img)}
