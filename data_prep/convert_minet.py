"""Convert the MI-Net authors' released PyTorch weights into Keras weights for ``MINetOfficial``.

    python data_prep/convert_minet.py /path/to/minet_official_its.pth [--out FILE.weights.h5]

Needs neither PyTorch nor the authors' code, and runs no code from the checkpoint (restricted unpickler, see
tfdehaze/convert.py). Default output: tfdehaze.paths.weights_dir()/minet_official_its.weights.h5, where
``tfdehaze.models.registry.load("minet-official")`` looks.
"""
import sys

from tfdehaze.cli import Parser, run_cli

PROG = "convert_minet.py"


def main(argv=None):
    p = Parser(prog=PROG, description=__doc__.splitlines()[0])
    p.add_argument("pth", help="the released checkpoint (legacy PyTorch pickle of DataParallel(MI_Net))")
    p.add_argument("--out", help="output .weights.h5 (default: the tfdehaze weights folder)")
    args = p.parse_args(argv)

    def job():
        from tfdehaze.convert import convert_official_weights

        print(f"wrote {convert_official_weights(args.pth, args.out)}")

    return run_cli(PROG, job)


if __name__ == "__main__":
    sys.exit(main())
