"""Does the secret check take the same time whatever the guess?

Times ``SecretVerifier.verify`` for guesses that share no, half or all but one
leading characters with the secret, for guesses shorter, as long as and
longer than the secret (all within one SHA-256 block, so that only the
comparison could make a difference), and for the right secret and a rotated
one. Each case is timed in interleaved batches; the medians should agree to
within the noise of the machine.

Run it by hand from the repository root::

    python bench/verify_timing.py
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from webhook_receiver.verify import SecretVerifier  # noqa: E402

SECRET = "Vq3pTz8wLmR2xN7cYh4kBd6sJf9gHa1e"  # 32 characters
OLD = "Kx9mPq2wEr5tYu8iOp3aSd6fGh1jKl4z"


def cases() -> dict[str, str]:
    wrong = "".join("a" if c != "a" else "b" for c in SECRET)
    return {
        "no prefix right": wrong,
        "half right": SECRET[:16] + wrong[16:],
        "all but last right": SECRET[:-1] + wrong[-1],
        "shorter (31)": SECRET[:-1],
        "longer (33)": SECRET + "x",
        "empty": "",
        "right (newest)": SECRET,
        "right (rotated)": OLD,
    }


def main() -> None:
    verifier = SecretVerifier([OLD, SECRET])
    guesses = cases()
    samples: dict[str, list[float]] = {name: [] for name in guesses}
    batch = 2000
    order = list(guesses)
    for _ in range(60):
        random.shuffle(order)
        for name in order:
            guess = guesses[name]
            started = time.perf_counter_ns()
            for _ in range(batch):
                verifier.verify(guess)
            samples[name].append((time.perf_counter_ns() - started) / batch)
    base = statistics.median(samples["no prefix right"])
    print(f"{'case':<20} {'median ns':>10} {'vs no prefix':>13}")
    for name, values in samples.items():
        median = statistics.median(values)
        print(f"{name:<20} {median:10.1f} {median / base - 1:+12.1%}")


if __name__ == "__main__":
    main()
