import sys

import nbformat
from nbclient import NotebookClient

p = sys.argv[1]
nb = nbformat.read(p, as_version=4)
NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": "nbs"}}).execute()
nbformat.write(nb, p)
