"""The training loss weights on the real train sides: BUS-UCLM weighs the share of BUSI the recipe
says, spread equally over its patients whatever the number of frames behind each."""

from collections import Counter, defaultdict

import numpy as np
import pytest

from training.busi import SOURCES
from training.finetune import BUS_UCLM_SHARE, samples_by_side, scan_weights
from training.split import read_split


def test_bus_uclm_weighs_its_share_of_busi_equally_per_patient(busi_root, bus_uclm_root):
    busi, uclm = samples_by_side("busi")["train"], samples_by_side("bus_uclm")["train"]
    assert scan_weights("busi", busi, len(busi)).sum() == pytest.approx(len(busi))
    weights = scan_weights("bus_uclm", uclm, len(busi))
    assert weights.sum() == pytest.approx(BUS_UCLM_SHARE * len(busi))

    patient_of = {r["file"]: r["patient_id"] for r in read_split(SOURCES["bus_uclm"].split_csv)}
    per_patient = defaultdict(float)
    for sample, weight in zip(uclm, weights, strict=True):
        per_patient[patient_of[sample.relpath]] += weight
    frames = Counter(patient_of[s.relpath] for s in uclm).values()
    assert max(frames) > 3 * min(frames), "patients differ in frames, so equal weights say something"
    np.testing.assert_allclose(list(per_patient.values()), BUS_UCLM_SHARE * len(busi) / len(per_patient), rtol=1e-5)
