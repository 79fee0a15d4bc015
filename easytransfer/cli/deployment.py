"""``easytransfer evaluate``, ``predict`` and ``export``: the commands that use a saved model bundle."""

from __future__ import annotations

from pathlib import Path

__all__ = ["HANDLERS", "add_parsers"]


def add_parsers(commands) -> None:
    """Add ``evaluate``, ``predict`` and ``export`` to `commands` (the sub-parsers of `build_parser`)."""
    evaluate = commands.add_parser("evaluate", help="per-class precision / recall / F1 of a model on labelled images",
                                   description="Predict a folder of class sub-folders with a model bundle and print "
                                   "the per-class table and the accuracy.")
    evaluate.add_argument("model", help="a model bundle folder (learn.export / easytransfer train)")
    evaluate.add_argument("data", help="a folder of class sub-folders")

    predict = commands.add_parser("predict", help="predict images or folders with a model bundle",
                                  description="Print path, label and probability for each image; folders are "
                                  "streamed in batches.")
    predict.add_argument("model", help="a model bundle folder")
    predict.add_argument("paths", nargs="+", help="image files or folders")
    predict.add_argument("--csv", default=None, help="also write every prediction (all class probabilities) here")

    export = commands.add_parser("export", help="convert a model bundle to ONNX or TorchScript",
                                 description="Write the bundle's model as ONNX (onnxruntime) or TorchScript; both run "
                                 "without easytransfer.")
    export.add_argument("model", help="a model bundle folder")
    kind = export.add_mutually_exclusive_group(required=True)
    kind.add_argument("--onnx", nargs="?", const="", metavar="PATH", help="ONNX file (default MODEL/model.onnx)")
    kind.add_argument("--torchscript", nargs="?", const="", metavar="PATH", help="TorchScript file (default "
                      "MODEL/model.pt)")


def _evaluate(args) -> None:
    from ..data.sources import class_folder_items
    from ..deploy.predictor import load_model
    from ..errors import DataError
    from ..evaluate.metrics import per_class_report

    predictor = load_model(args.model)
    folder = Path(args.data)
    if not folder.is_dir():
        raise DataError(f"Data folder {str(folder)!r} does not exist or is not a folder.")
    items = class_folder_items(folder, "test", [])
    unseen = sorted(set(items["label"]) - set(predictor.vocab))
    if unseen:
        raise DataError(f"Labels {unseen} in {str(folder)!r} are not classes of the model ({predictor.vocab}).")
    table = predictor.predict_folder(folder)
    table = table.merge(items[["path", "label"]].rename(columns={"label": "actual"}), on="path", how="inner")
    table = table[table["error"].isna()]
    if table.empty:
        raise DataError(f"No readable images with a class sub-folder in {str(folder)!r}.")
    index = {c: i for i, c in enumerate(predictor.vocab)}
    report = per_class_report(table["actual"].map(index).to_numpy(), table["label"].map(index).to_numpy(),
                              predictor.vocab)
    print(report.to_string(float_format=lambda v: f"{v:.4f}"))
    print(f"accuracy: {(table['actual'] == table['label']).mean():.4f} on {len(table)} images")


def _predict(args) -> None:
    import pandas as pd

    from ..deploy.predictor import load_model

    predictor = load_model(args.model)
    tables = []
    for raw in args.paths:
        path = Path(raw)
        if not path.exists():
            raise FileNotFoundError(f"{raw!r} does not exist.")
        tables.append(predictor.predict_folder(path))
    table = pd.concat(tables, ignore_index=True)
    for row in table.itertuples():
        print(f"{row.path}\t{row.label}\t{row.probability:.4f}" if pd.isna(row.error) else
              f"{row.path}\tERROR\t{row.error}")
    if args.csv:
        table.to_csv(args.csv, index=False)
        print(f"{len(table)} predictions written to {args.csv}")


def _export(args) -> None:
    from ..deploy.convert import export_onnx, export_torchscript
    from ..deploy.predictor import load_model

    predictor = load_model(args.model)
    size = predictor.config.preprocessing.size
    if args.onnx is not None:
        path = export_onnx(predictor.model, args.onnx or Path(args.model) / "model.onnx", size)
    else:
        path = export_torchscript(predictor.model, args.torchscript or Path(args.model) / "model.pt", size)
    print(f"written {path}")


HANDLERS = {"evaluate": _evaluate, "predict": _predict, "export": _export}
