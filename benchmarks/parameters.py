"""Parameter count of every registered model with its default (the paper's) configuration, next to the paper's figure
where the paper prints one.

    python benchmarks/parameters.py [--quick]

Iterates over `tfdehaze.models.registry.names()`, so models added later are counted too. Each model is built with
random weights (`model.build` where the class has one, else one call on a 16 x 16 image): nothing is trained or
downloaded, and the table takes seconds (``--quick`` changes nothing; it exists so every benchmark takes it).
"""
import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def count(name):
    """Weights of ``registry.build(name)``, built without running a full-size image."""
    import keras
    import numpy as np

    from tfdehaze.models import registry

    model = registry.build(name)
    if type(model).build is keras.Model.build:           # no build method of its own: one small call builds it
        model(np.zeros((1, 16, 16, 3), np.float32))
    else:
        model.build((None, None, None, 3))
    return int(model.count_params())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the same table (it takes seconds anyway)")
    parser.parse_args()

    from tfdehaze.models import registry
    from tfdehaze.models.rfd import PAPER_PARAMETERS

    print("parameters of each registered model's default configuration (random weights)")
    print(f"{'model':<20} {'parameters':>12} {'paper':>10}  where the paper prints it")
    for name in registry.names():
        paper, source = PAPER_PARAMETERS.get(name, (None, ""))
        paper_text = f"{paper:,}" if paper is not None else "-"
        print(f"{name:<20} {count(name):>12,} {paper_text:>10}  {source}", flush=True)


if __name__ == "__main__":
    main()
