"""Networks shared by the methods: classifiers (MLP, conv nets with CAM) and generators."""
from .classifiers import ARCHS, MLP, Classifier, ConvNet, GaussianNoise, build_classifier
from .generators import ConvGenerator, MLPGenerator, build_generator

__all__ = ["ARCHS", "MLP", "Classifier", "ConvNet", "GaussianNoise", "build_classifier", "ConvGenerator",
           "MLPGenerator", "build_generator"]
