"""tfdehaze-serve: TF Serving's REST API for a model base path, locally (see tfdehaze.serving.server)."""
from __future__ import annotations

from tfdehaze.cli import Parser, run_cli


def _parser() -> Parser:
    parser = Parser(prog="tfdehaze-serve", description=(
        "Serve the newest version under MODEL_BASE_PATH with TF Serving's REST API (GET /v1/models/NAME, "
        "GET /v1/models/NAME/metadata, POST /v1/models/NAME:predict)."))
    parser.add_argument("model_base_path", help="folder of integer version folders, as tfdehaze-export writes")
    parser.add_argument("--port", type=int, default=8501, help="port (default 8501, TF Serving's REST port; 0: any)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--model-name", help="served name (default: the basename of MODEL_BASE_PATH)")
    parser.add_argument("--max-body-bytes", type=int, default=32 * 1024 * 1024,
                        help="largest request body accepted (default 32 MiB; larger ones get HTTP 413)")
    parser.add_argument("--verbose", action="store_true", help="log every request")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def job():
        from tfdehaze.serving.server import serve

        serve(args.model_base_path, port=args.port, host=args.host, model_name=args.model_name,
              max_body_bytes=args.max_body_bytes, verbose=args.verbose)

    return run_cli("tfdehaze-serve", job, tensorflow=True)


if __name__ == "__main__":
    raise SystemExit(main())
