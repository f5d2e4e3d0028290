"""SMILES strings: tokens, the MOSES molecules, and RDKit scores (QED, logP, validity, diversity).

The training molecules are the MOSES benchmark's SMILES (1.58M drug-like molecules from ZINC,
train split; 176k test), read from the ``moses/dataset/data/*.csv.gz`` files that the ``molsets``
wheel ships; nothing is downloaded. The wheel pins old versions of its dependencies, so it is
installed without them (``pip install --no-deps molsets==0.3.1``) and only its data files are
read (found on ``sys.path``): ``moses`` itself is never imported. RDKit
(``pip install 'flowforge[chem]'``) parses and scores molecules.

Tokens follow the usual SMILES regular expression (bracket atoms, two-letter halogens, ring
digits, ``%nn`` ring labels, bonds and branches are one token each).

References:
    Molecular Sets (MOSES): A Benchmarking Platform for Molecular Generation Models
    (Polykovskiy et al., 2020), arXiv:1811.12823.
    Quantifying the chemical beauty of drugs (Bickerton et al., 2012), Nature Chemistry 4, 90.
"""

from __future__ import annotations

import functools
import gzip
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "SCORES",
    "require_chem",
    "canonical_smiles",
    "moses_smiles",
    "score_smiles",
    "tanimoto_diversity",
    "tokenize",
]

_TOKEN = re.compile(
    r"(\[[^\]]+]|Br|Cl|B|C|N|O|S|P|F|I|b|c|n|o|s|p|\(|\)|\.|=|#|-|\+|\\|/|:|~|@|\?|>|\*|\$"
    r"|%[0-9]{2}|[0-9])"
)
SCORES = ("qed", "logp")
MOSES_SPLITS = ("train", "test", "test_scaffolds")


def tokenize(smiles: str) -> list[str]:
    """The tokens of a SMILES string.

    Raises:
        ValueError: when some characters are not SMILES tokens.

    Example:
        >>> tokenize("CC(=O)Nc1ccc(Cl)cc1")
        ['C', 'C', '(', '=', 'O', ')', 'N', 'c', '1', 'c', 'c', 'c', '(', 'Cl', ')', 'c', 'c', '1']
    """
    tokens = _TOKEN.findall(smiles)
    if "".join(tokens) != smiles:
        raise ValueError(f"{smiles!r} holds characters that are not SMILES tokens.")
    return tokens


def _moses_dir() -> Path:
    for entry in sys.path:  # the wheel's data folder, found without importing the package
        folder = Path(entry or ".", "moses", "dataset", "data")
        if folder.is_dir():
            return folder
    raise ImportError(
        "the MOSES molecules come from the molsets wheel: pip install --no-deps molsets==0.3.1"
    )


@functools.lru_cache(maxsize=4)
def _read_moses(split: str) -> tuple[str, ...]:
    path = _moses_dir() / f"{split}.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; reinstall: pip install --no-deps molsets")
    with gzip.open(path, "rt") as f:
        lines = f.read().splitlines()
    return tuple(line.split(",", 1)[0] for line in lines[1:])  # the header is "SMILES[,SPLIT]"


def moses_smiles(split: str = "train", limit: int | None = None) -> list[str]:
    """The MOSES SMILES of ``split`` (``train``, ``test`` or ``test_scaffolds``), in file order.

    Args:
        split: the MOSES split.
        limit: keep the first ``limit`` strings (None: all).

    Raises:
        ImportError: when the molsets wheel is not installed (the message says how).
    """
    if split not in MOSES_SPLITS:
        raise ValueError(f"split={split!r}; choose one of {', '.join(MOSES_SPLITS)}.")
    smiles = _read_moses(split)
    return list(smiles if limit is None else smiles[:limit])


def _chem():
    """RDKit's Chem module, or an ImportError naming the extra."""
    try:
        from rdkit import Chem, RDLogger
    except ImportError:
        raise ImportError(
            "molecules need RDKit: pip install 'flowforge[chem]' (or pip install rdkit)"
        ) from None
    RDLogger.DisableLog("rdApp.*")  # parse failures are expected and counted, not printed
    return Chem


def require_chem(moses: bool = True) -> None:
    """Raise ImportError (one line naming the install) unless RDKit and, with ``moses``, the
    MOSES files are present; runs call it before they write anything."""
    _chem()
    if moses:
        _moses_dir()


def _mol(smiles: str):
    """The RDKit molecule of ``smiles``, or None when it does not parse or sanitise."""
    if not smiles:
        return None
    return _chem().MolFromSmiles(smiles)


def canonical_smiles(smiles: Sequence[str]) -> list[str | None]:
    """RDKit's canonical SMILES of each string (None where it is not a valid molecule).

    Example:
        >>> canonical_smiles(["OCC", "C1CC", "c1ccccc1"])
        ['CCO', None, 'c1ccccc1']
    """
    chem = _chem()
    out: list[str | None] = []
    for s in smiles:
        mol = _mol(s)
        out.append(None if mol is None else chem.MolToSmiles(mol))
    return out


def score_smiles(smiles: Sequence[str], score: str = "qed") -> np.ndarray:
    """(n,) float64 scores of the molecules, NaN where a string is not a valid molecule (RDKit
    does not parse it, or fails to score it).

    ``qed``: the quantitative estimate of drug-likeness in [0, 1] (Bickerton et al., 2012);
    ``logp``: Crippen's octanol-water partition coefficient.

    Example:
        >>> s = score_smiles(["CC(=O)Oc1ccccc1C(=O)O", "C(", "CCO"], "qed")  # aspirin
        >>> [round(v, 3) for v in s.tolist()[::2]], bool(np.isnan(s[1]))
        ([0.55, 0.407], True)
    """
    if score not in SCORES:
        raise ValueError(f"score={score!r}; choose one of {', '.join(SCORES)}.")
    _chem()
    from rdkit.Chem import QED, Crippen

    fn = QED.qed if score == "qed" else Crippen.MolLogP
    out = np.full(len(smiles), np.nan)
    for i, s in enumerate(smiles):
        mol = _mol(s)
        if mol is not None and mol.GetNumAtoms() > 0:
            try:  # a few parsed molecules fail later sanitisation (kekulisation in RemoveHs)
                out[i] = fn(mol)
            except Exception:  # noqa: BLE001  (RDKit raises its own exception types)
                pass
    return out


def tanimoto_diversity(smiles: Sequence[str], radius: int = 2, bits: int = 2048) -> float:
    """Mean pairwise Tanimoto distance 1 - T(a, b) of Morgan fingerprints (radius 2, 2048 bits)
    over the valid molecules of ``smiles`` (0 for fewer than two).

    Example:
        >>> tanimoto_diversity(["CCO", "CCO"]), tanimoto_diversity(["CCO", "c1ccccc1"])
        (0.0, 1.0)
    """
    _chem()
    from rdkit import DataStructs
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=bits)
    fps = [gen.GetFingerprint(m) for m in map(_mol, smiles) if m is not None]
    if len(fps) < 2:
        return 0.0
    total = 0.0
    for i in range(1, len(fps)):
        total += sum(1.0 - t for t in DataStructs.BulkTanimotoSimilarity(fps[i], fps[:i]))
    return total / (len(fps) * (len(fps) - 1) / 2)
