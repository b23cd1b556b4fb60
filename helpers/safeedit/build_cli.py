"""The ``safeedit-build`` command: :func:`helpers.safeedit.build.build_safeedit` from the command line."""
from __future__ import annotations

from .build import build_safeedit, default_sizes


def add_arguments(parser) -> None:
    try:
        sizes = default_sizes()
    except ValueError:  # a bad HELPERS_SCALE must not break --help; the build itself reports it
        sizes = default_sizes("small")
    parser.add_argument("--out", required=True, help="output folder (records, logs, card); rerun to resume")
    parser.add_argument("--per-category", type=int, default=None,
                        help=f"questions per category (default {sizes['per_category']} at this scale; paper: 60)")
    parser.add_argument("--attacks", type=int, default=None,
                        help=f"attack prompts per question (default {sizes['attacks']}; paper: 15)")
    parser.add_argument("--teacher", default=None,
                        help="teacher: 'embedded' (default), 'openai:MODEL' (HELPERS_TEACHER_BASE_URL/_API_KEY), "
                             "'hf:ORG/NAME' or a local model folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-new-tokens", type=int, default=None, help="tokens per response (both rounds)")
    parser.add_argument("--question-tokens", type=int, default=None, help="tokens per question-writing reply")
    parser.add_argument("--question-rounds", type=int, default=None, help="teacher rounds before the curated top-up")
    parser.add_argument("--chunk-size", type=int, default=16, help="prompts per logged teacher call")
    parser.add_argument("--constrain", default="auto", choices=["auto", "team", "alpaca", "hub"],
                        help="D_cons source (auto: the data folder's Alpaca-style file if present, else team-written)")
    parser.add_argument("--review", default="prescreen", choices=["prescreen", "accept-all"],
                        help="undecided items follow the pre-screen, or are all accepted")
    parser.add_argument("--review-file", default=None, help="decisions JSONL from the reviewer (default OUT/review.jsonl)")
    parser.add_argument("--no-plot", action="store_true", help="skip the seaborn plot of the card")


def main(args) -> int:
    from ..common.checks import at_least, check_output_file, check_output_folder

    at_least(args, 1, "per_category", "attacks", "chunk_size", "max_new_tokens", "question_tokens")
    at_least(args, 0, "question_rounds")
    check_output_folder(args.out)
    if args.review_file is not None:  # read before the build (a missing file: no decisions yet)
        check_output_file(args.review_file, "--review-file")
    result = build_safeedit(
        args.out, per_category=args.per_category, attacks=args.attacks, teacher=args.teacher, seed=args.seed,
        response_tokens=args.max_new_tokens, question_tokens=args.question_tokens,
        question_rounds=args.question_rounds, chunk_size=args.chunk_size, constrain=args.constrain,
        review=args.review, review_path=args.review_file, plot=not args.no_plot)
    counts = ", ".join(f"{split} {len(records)}" for split, records in result.splits.items())
    print(f"wrote {counts} records to {result.out} ({result.review.get('reject', 0)} rejected in review)")
    print("stats: " + ", ".join(f"{k}={v}" for k, v in sorted(result.stats.items())))
    return 0
