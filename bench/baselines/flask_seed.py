"""The baseline: the typical "seed" model app (Flask, loads the model, one request at a time).

Run: MODEL_REF=mnist-mlp:1 python bench/baselines/flask_seed.py PORT   (single process, not threaded)
  or gunicorn -w 2 -b 127.0.0.1:PORT --chdir bench/baselines flask_seed:app   (2 sync workers)
"""

from __future__ import annotations

import os
import sys

import torch
from flask import Flask, jsonify, request

import nbmodelpack

torch.set_num_threads(int(os.environ.get("TORCH_THREADS", "1")))
model = nbmodelpack.load(os.environ["MODEL_REF"])
labels = [str(i) for i in range(10)]
app = Flask(__name__)


@app.post("/predict")
def predict():  # type: ignore[no-untyped-def]
    x = torch.tensor(request.get_json()["input"], dtype=torch.float32)
    with torch.no_grad():
        probs = torch.softmax(model(x), dim=1)[0]
    return jsonify({"prediction": labels[int(probs.argmax())], "probabilities": dict(zip(labels, probs.tolist(), strict=True))})


if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]), threaded=False)
