"""Datasets: import, versions, splits, label views and label files."""

from modelfab.data.elpv import ELPV_TASKS, import_elpv
from modelfab.data.importers import import_image_folder, import_text_table
from modelfab.data.labels_io import export_labels, import_labels
from modelfab.data.ops import resplit
from modelfab.data.splits import stratified_split
from modelfab.data.tasks import TaskView, get_task, task_labels

__all__ = [
    "ELPV_TASKS",
    "TaskView",
    "export_labels",
    "get_task",
    "import_elpv",
    "import_image_folder",
    "import_labels",
    "import_text_table",
    "resplit",
    "stratified_split",
    "task_labels",
]
