import nbformat as nbf

nb = nbf.v4.new_notebook()
md, code = nbf.v4.new_markdown_cell, nbf.v4.new_code_cell
nb.cells = [
    md("# Choosing a pre-trained model\n\n`describe_model` prints what easytransfer knows about an architecture "
       "(nothing is downloaded), and `summary_groups` shows the layer groups that freezing and learning rates work on."),
    code("from easytransfer import describe_model, list_models\n\n"
         "for arch in [\"resnet50\", \"efficientnet_b3\", \"convnext_tiny\", \"vit_small_patch14_dinov2\", "
         "\"vit_base_patch16_clip_224\", \"tv:mobilenet_v3_large\"]:\n"
         "    describe_model(arch)\n    print()"),
    code("list_models(\"*lite*\", offline_only=True)"),
    md("## Layer groups before and after `unfreeze(2)`"),
    code("from easytransfer import ImageData, transfer_learner\nfrom easytransfer.datasets import textile_folder\n\n"
         "dls = ImageData.from_folder(textile_folder(limit=10, seed=0), valid_pct=0.2, seed=42)\n"
         "learn = transfer_learner(dls, \"efficientnet_lite0\")\nlearn.summary_groups()"),
    code("learn.unfreeze(2)\nlearn.summary_groups()"),
]
nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
nbf.write(nb, "nbs/01_choosing_a_model.ipynb")
