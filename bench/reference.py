"""The baseline decoder of the training benchmark, written the way the common PyTorch tutorial does.

The popular "Show, Attend and Tell" PyTorch tutorial trains its decoder with a Python loop over
time steps that, at every step t:

- sorts the batch by caption length once, then *shrinks* it: only the first
  ``batch_size_t = sum(decode_lengths > t)`` rows (captions still running) take part;
- recomputes the attention projection of every annotation vector,
  ``encoder_att(encoder_out[:batch_size_t])`` — L·D·A multiply-adds per image per step;
- applies the gate, one ``nn.LSTMCell`` step and the output layer on ``dropout(h)`` for the
  shrunk batch, and writes the step's scores and alphas into zero-initialised (B, T, ·) buffers;
- scores the packed real tokens (``pack_padded_sequence``) with cross-entropy plus the doubly
  stochastic penalty.

This module keeps that control flow and compute pattern, with the tutorial's module names, but the
*equations* of `sat.decoders.lstm.LSTMDecoder` (tanh-additive attention, h_0/c_0 = tanh(f_init(mean a)),
the deep output layer, our form of the penalty), so that `load_from` can copy our weights in and
the two decoders compute the same loss on the same batch. That makes the speed comparison about
how the work is organised, not about what is computed.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from sat.decoders.lstm import LSTMDecoder


class TutorialAttention(nn.Module):
    """Additive attention, projecting the encoder output inside every call (as the tutorial)."""

    def __init__(self, encoder_dim: int, decoder_dim: int, attention_dim: int):
        super().__init__()
        self.encoder_att = nn.Linear(encoder_dim, attention_dim)
        self.decoder_att = nn.Linear(decoder_dim, attention_dim, bias=False)
        self.full_att = nn.Linear(attention_dim, 1)

    def forward(self, encoder_out: torch.Tensor, decoder_hidden: torch.Tensor):
        att1 = self.encoder_att(encoder_out)                 # (b, L, A): recomputed every step
        att2 = self.decoder_att(decoder_hidden)              # (b, A)
        att = self.full_att(torch.tanh(att1 + att2.unsqueeze(1))).squeeze(2)  # (b, L)
        alpha = torch.softmax(att, dim=1)
        context = (encoder_out * alpha.unsqueeze(2)).sum(dim=1)  # (b, D)
        return context, alpha


class TutorialDecoder(nn.Module):
    """Tutorial-style training decoder (see the module docstring)."""

    def __init__(self, *, vocab_size: int, encoder_dim: int, embed_dim: int, decoder_dim: int,
                 attention_dim: int, dropout: float):
        super().__init__()
        self.vocab_size = vocab_size
        self.attention = TutorialAttention(encoder_dim, decoder_dim, attention_dim)
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        self.dropout = nn.Dropout(p=dropout)
        self.decode_step = nn.LSTMCell(embed_dim + encoder_dim, decoder_dim, bias=True)
        self.init_h = nn.Linear(encoder_dim, decoder_dim)
        self.init_c = nn.Linear(encoder_dim, decoder_dim)
        self.f_beta = nn.Linear(decoder_dim, 1)
        self.out_h = nn.Linear(decoder_dim, embed_dim)
        self.out_z = nn.Linear(encoder_dim, embed_dim, bias=False)
        self.fc = nn.Linear(embed_dim, vocab_size)

    # NOTE: the tutorial's own names, mapped from ours, so identical weights can be compared.
    NAME_MAP = {
        "embed.weight": "embedding.weight",
        "attention.key.weight": "attention.encoder_att.weight",
        "attention.key.bias": "attention.encoder_att.bias",
        "attention.query.weight": "attention.decoder_att.weight",
        "attention.score.weight": "attention.full_att.weight",
        "attention.score.bias": "attention.full_att.bias",
        "gate.weight": "f_beta.weight",
        "gate.bias": "f_beta.bias",
        "cell.weight_ih": "decode_step.weight_ih",
        "cell.weight_hh": "decode_step.weight_hh",
        "cell.bias_ih": "decode_step.bias_ih",
        "cell.bias_hh": "decode_step.bias_hh",
        "out.weight": "fc.weight",
        "out.bias": "fc.bias",
    }

    def load_from(self, decoder: LSTMDecoder) -> "TutorialDecoder":
        """Copy the weights of one of our soft-attention LSTM decoders (with gate) into this one."""
        state = {self.NAME_MAP.get(k, k): v for k, v in decoder.state_dict().items()}
        self.load_state_dict(state, strict=True)
        return self

    init_from_mean = True
    """h_0, c_0 from the mean annotation vector (the tutorial's); False: from f_init's bias alone, as
    our decoders with `init_state="zeros"` start (the bundled soft model)."""

    def init_hidden_state(self, encoder_out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = encoder_out.mean(dim=1)
        if not self.init_from_mean:
            mean = torch.zeros_like(mean)
        return torch.tanh(self.init_h(mean)), torch.tanh(self.init_c(mean))

    def forward(self, encoder_out: torch.Tensor, encoded_captions: torch.Tensor,
                caption_lengths: torch.Tensor):
        """encoder_out (B, L, D), captions (B, T+1) with <start>…<end>, lengths (B,) incl. both.

        Returns scores (B, T, V), the sorted captions, decode lengths, alphas (B, T, L), sort order.
        """
        B, L = encoder_out.shape[:2]
        caption_lengths, sort_ind = caption_lengths.sort(dim=0, descending=True)
        encoder_out = encoder_out[sort_ind]
        encoded_captions = encoded_captions[sort_ind]
        embeddings = self.embedding(encoded_captions)  # (B, T+1, m)
        h, c = self.init_hidden_state(encoder_out)
        decode_lengths = (caption_lengths - 1).tolist()
        T = max(decode_lengths)
        predictions = encoder_out.new_zeros(B, T, self.vocab_size)
        alphas = encoder_out.new_zeros(B, T, L)
        for t in range(T):
            batch_size_t = sum(n > t for n in decode_lengths)
            context, alpha = self.attention(encoder_out[:batch_size_t], h[:batch_size_t])
            gate = torch.sigmoid(self.f_beta(h[:batch_size_t]))
            context = gate * context
            emb = embeddings[:batch_size_t, t, :]
            h, c = self.decode_step(torch.cat([emb, context], dim=1), (h[:batch_size_t], c[:batch_size_t]))
            x = torch.tanh(emb + self.out_h(self.dropout(h)) + self.out_z(context))
            predictions[:batch_size_t, t, :] = self.fc(self.dropout(x))
            alphas[:batch_size_t, t, :] = alpha
        return predictions, encoded_captions, decode_lengths, alphas, sort_ind

    def loss(self, encoder_out: torch.Tensor, captions: torch.Tensor, *, pad_id: int = 0,
             alpha_c: float = 1.0) -> torch.Tensor:
        """The tutorial's objective on packed real tokens, with its doubly stochastic penalty (averaged over
        images and locations, as `sat.attention.doubly_stochastic`)."""
        lengths = (captions != pad_id).sum(dim=1)
        scores, caps_sorted, decode_lengths, alphas, _ = self(encoder_out, captions, lengths)
        targets = caps_sorted[:, 1:]
        packed_scores = pack_padded_sequence(scores, decode_lengths, batch_first=True).data
        packed_targets = pack_padded_sequence(targets, decode_lengths, batch_first=True).data
        xent = F.cross_entropy(packed_scores, packed_targets)
        reg = ((1.0 - alphas.sum(dim=1)) ** 2).mean()
        return xent + alpha_c * reg


    @torch.no_grad()
    def beam_search_one(self, encoder_out: torch.Tensor, *, beam_size: int, max_len: int, pad_id: int = 0,
                        start_id: int = 1, end_id: int = 2, unk_id: int | None = 3) -> tuple[list[int], float]:
        """One image's beam search the tutorial's way: encoder_out (1, L, D) → (token ids, score).

        The tutorial's control flow: the image's k beams form the batch; every step recomputes the
        attention projection, takes the top k of the flattened (k·V) scores, moves beams that emitted
        <end> to a finished list and *shrinks* k by that many, and stops when k reaches 0. The best
        finished caption by summed log-probability wins. Our search's conventions are kept so that the
        captions can be compared: <pad>/<start>/<unk> are never generated, and at step `max_len` a beam
        whose best token is <end> ends with it while the others are cut (no <end>, none in the score).
        """
        k = beam_size
        enc = encoder_out.expand(k, *encoder_out.shape[1:])  # (k, L, D)
        prev = torch.full((k,), start_id, dtype=torch.long)
        seqs = torch.empty(k, 0, dtype=torch.long)
        top = torch.zeros(k, 1)
        done_seqs: list[list[int]] = []
        done_scores: list[float] = []
        h, c = self.init_hidden_state(enc)
        for step in range(max_len + 1):
            emb = self.embedding(prev)  # (k, m)
            context, _ = self.attention(enc, h)
            context = torch.sigmoid(self.f_beta(h)) * context
            h, c = self.decode_step(torch.cat([emb, context], dim=1), (h, c))
            x = torch.tanh(emb + self.out_h(h) + self.out_z(context))
            logp = F.log_softmax(self.fc(x), dim=1)  # (k, V)
            logp[:, pad_id] = float("-inf")
            logp[:, start_id] = float("-inf")
            if unk_id is not None:
                logp[:, unk_id] = float("-inf")
            if step == max_len:  # no room for a word: end where <end> is the best token, else cut
                for i in range(k):
                    ends = int(logp[i].argmax()) == end_id
                    done_seqs.append(seqs[i].tolist() + ([end_id] if ends else []))
                    done_scores.append(float(top[i, 0] + (logp[i, end_id] if ends else 0.0)))
                break
            scores = top + logp  # (k, V)
            flat = scores[0] if step == 0 else scores.view(-1)  # NOTE: at step 0 all k beams are equal
            top_scores, top_words = flat.topk(k)
            parent = torch.div(top_words, logp.size(1), rounding_mode="floor")
            word = top_words % logp.size(1)
            seqs = torch.cat([seqs[parent], word.unsqueeze(1)], dim=1)
            ended = word == end_id
            for i in ended.nonzero().flatten().tolist():
                done_seqs.append(seqs[i].tolist())
                done_scores.append(float(top_scores[i]))
            k -= int(ended.sum())
            if k == 0:
                break
            live = (~ended).nonzero().flatten()
            seqs, top = seqs[live], top_scores[live].unsqueeze(1)
            h, c, enc = h[parent[live]], c[parent[live]], enc[parent[live]]
            prev = word[live]
        best = max(range(len(done_scores)), key=done_scores.__getitem__)
        return done_seqs[best], done_scores[best]


def reference_for(decoder: LSTMDecoder, *, attention_dim: int, dropout: float) -> TutorialDecoder:
    """A tutorial decoder with the same dimensions as `decoder`, holding a copy of its weights."""
    embed_dim = decoder.embed.embedding_dim
    ref = TutorialDecoder(vocab_size=decoder.embed.num_embeddings, encoder_dim=decoder.init_h.in_features,
                          embed_dim=embed_dim, decoder_dim=decoder.init_h.out_features,
                          attention_dim=attention_dim, dropout=dropout)
    ref.init_from_mean = decoder.init_from_mean
    return ref.load_from(decoder)
