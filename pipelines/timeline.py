"""Outputs of `aver predict`: the timeline as CSV, JSON and (optionally) a PNG plot."""
from __future__ import annotations

import csv
import json
from pathlib import Path


def write_outputs(result: dict, out_dir: Path, stem: str, plot: bool) -> dict[str, str]:
    out_dir.mkdir(parents=True, exist_ok=True)
    classes = result["model"]["classes"]
    csv_path, json_path = out_dir / f"{stem}.timeline.csv", out_dir / f"{stem}.timeline.json"
    with open(csv_path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["start", "end", "label", "confidence", *(f"p_{c}" for c in classes), "modalities",
                         "valence", "arousal", "face_x1", "face_y1", "face_x2", "face_y2", "face_fraction",
                         "speaking_track", "n_faces", "failures"])
        for t in result["windows"]:
            box, speaker = t["face_box"] or [None] * 4, t["speaking_face"] or {}
            writer.writerow([f"{t['start']:.3f}", f"{t['end']:.3f}", t["label"], f"{t['confidence']:.4f}",
                             *(f"{t['probs'][c]:.4f}" for c in classes), "+".join(t["modalities"]),
                             *("" if t.get(k) is None else t[k] for k in ("valence", "arousal")),
                             *("" if v is None else v for v in box),
                             "" if t["face_fraction"] is None else f"{t['face_fraction']:.3f}",
                             speaker.get("track", ""), speaker.get("n_faces", ""),
                             "; ".join(f"{x['feature_set']}:{x['reason']}" for x in t["failures"])])
    outputs = {"csv": str(csv_path), "json": str(json_path)}
    if plot:
        outputs["png"] = str(plot_timeline(result, out_dir / f"{stem}.timeline.png"))
    json_path.write_text(json.dumps({**result, "outputs": outputs}, indent=2))
    return outputs


def plot_timeline(result: dict, path: Path) -> Path:
    """Class probabilities over time (window centres), the predicted label of each window shaded underneath."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    classes, timeline = result["model"]["classes"], result["windows"]
    centres = [(t["start"] + t["end"]) / 2 for t in timeline]
    colours = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(classes)}
    fig, ax = plt.subplots(figsize=(10, 4), constrained_layout=True)
    for c in classes:
        ax.plot(centres, [t["probs"][c] for t in timeline], marker="o", color=colours[c], label=c)
    for t, centre in zip(timeline, centres):
        half = (t["end"] - t["start"]) / 2 if len(timeline) == 1 else result["hop"] / 2
        ax.axvspan(centre - half, centre + half, ymin=0, ymax=0.04, color=colours[t["label"]], lw=0)
    ax.set(xlim=(0, result["duration"]), ylim=(0, 1), xlabel="time (s, window centre)", ylabel="probability",
           title=f"{Path(result['file']).name}: {result['model']['name']} on {' + '.join(result['modalities_used'])}")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
