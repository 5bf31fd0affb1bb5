"""A deterministic synthetic contract-v1 feed for benchmarks: lab results, adverse events and
hospitalisations over many patients, interleaved in arrival order."""

from __future__ import annotations

import json
import random
from datetime import date, timedelta

LAB_UNITS = {"WBC": (7.0, "10^9/L"), "PLT": (280.0, "10^9/L"), "ESR": (20.0, "mm/h"),
             "CRP": (5.0, "mg/L"), "TG": (110.0, "mg/dL"), "FERRITIN": (60.0, "ng/mL")}


def feed_lines(n_messages: int, n_patients: int, seed: int = 7) -> list[bytes]:
    """``n_messages`` NDJSON lines (UTF-8, no newline): 50% labs, 35% AEs, 15% hospitalisations."""
    rng = random.Random(seed)
    start = date(2020, 1, 1)
    lines = []
    for i in range(n_messages):
        patient = f"P{rng.randrange(n_patients):06d}"
        day = (start + timedelta(days=rng.randrange(1500))).isoformat()
        r = rng.random()
        if r < 0.5:
            analyte = rng.choice(list(LAB_UNITS))
            mean, unit = LAB_UNITS[analyte]
            msg = {"type": "lab_result", "data": {"analyte": analyte, "unit": unit,
                                                  "value": round(mean * rng.uniform(0.6, 1.4), 2)}}
        elif r < 0.85:
            msg = {"type": "adverse_event", "data": {
                "term": rng.choice(["Upper respiratory tract infection", "Nausea", "Headache",
                                    "Pneumonia", "Gastroenteritis"]),
                "severity": rng.choice(["mild", "moderate", "severe"]), "serious": rng.random() < 0.1}}
        else:
            msg = {"type": "hospitalisation", "data": {"reason": "infection"}}
        msg.update({"schema_version": 1, "message_id": f"m{i:08d}", "source": "bench-registry",
                    "patient_id": patient, "occurred_at": day})
        lines.append(json.dumps(msg).encode())
    return lines
