"""The generated example data set and the end-to-end demo pipeline."""

from .dataset import DemoConfig, make_demo_dataset

__all__ = ["DemoConfig", "make_demo_dataset"]
