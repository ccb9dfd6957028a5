"""flask webhooks events / show / replay / prune / listen, on the store a TESTING app gets."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from flask import Flask

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.cli import webhooks_cli
from webhook_receiver.stores import EventStatus
from webhook_receiver.testing import make_event


@pytest.fixture
def shop(app: Flask, receiver: WebhookReceiver) -> tuple[Flask, dict[str, bool]]:
    broken = {"on": True}
    receiver.on("order.paid", name="ledger")(lambda e: None)

    @receiver.on("order.paid", "product.deleted", name="warehouse")
    def warehouse(event: Event) -> None:
        if broken["on"] and event.trigger == "order.paid":
            raise ConnectionError("warehouse API down")

    return app, broken


def test_events_show_replay_prune(shop: tuple[Flask, dict[str, bool]], send: Any, receiver: WebhookReceiver) -> None:
    app, broken = shop
    for n in range(3):
        send(make_event("order.paid", event_id=f"paid-{n}"))
    send(make_event("product.deleted", event_id="gone"))
    runner = app.test_cli_runner()

    listed = runner.invoke(webhooks_cli, ["events"])
    assert listed.exit_code == 0
    header, *lines = listed.output.splitlines()
    assert header.split() == ["received", "(UTC)", "id", "trigger", "status", "via", "handlers", "ok"]
    assert len(lines) == 4 and "gone" in lines[0] and "processed" in lines[0]
    assert len({line.index("order.paid") for line in lines[1:]}) == 1, "aligned columns"
    failed = runner.invoke(webhooks_cli, ["events", "--status", "failed", "--trigger", "order.paid", "--since", "1h"])
    assert [line.split()[2] for line in failed.output.splitlines()[1:]] == ["paid-2", "paid-1", "paid-0"]
    assert failed.output.splitlines()[1].rstrip().endswith("1/2")
    as_json = json.loads(runner.invoke(webhooks_cli, ["events", "--json", "--limit", "1"]).output)
    assert [e["id"] for e in as_json] == ["gone"] and as_json[0]["handlers"]["warehouse"]["ok"] is True
    shown_json = json.loads(runner.invoke(webhooks_cli, ["show", "paid-0", "--json"]).output)
    assert shown_json["status"] == "failed" and shown_json["body"]["id"] == "paid-0"
    routes = json.loads(runner.invoke(webhooks_cli, ["routes", "--json"]).output)
    assert routes["order.paid"] == ["ledger", "warehouse"]

    shown = runner.invoke(webhooks_cli, ["show", "paid-0"])
    assert shown.exit_code == 0
    assert "warehouse: FAILED: ConnectionError: warehouse API down (runs: 1" in shown.output
    assert '"secret_key": "[redacted]"' in shown.output
    assert runner.invoke(webhooks_cli, ["show", "nope"]).exit_code == 1

    still = runner.invoke(webhooks_cli, ["replay", "paid-0"])
    assert still.exit_code == 1 and "still failing: warehouse" in still.output
    all_failing = runner.invoke(webhooks_cli, ["replay", "--failed"])
    assert all_failing.exit_code == 1 and "3 failed" in all_failing.output, "the work failed: a non-zero exit"
    assert "no replayed event was processed" in all_failing.output
    broken["on"] = False
    one = runner.invoke(webhooks_cli, ["replay", "paid-0"])
    assert one.exit_code == 0 and one.output.strip().endswith("1 processed")
    every = runner.invoke(webhooks_cli, ["replay", "--failed"])
    assert every.exit_code == 0 and every.output.strip().endswith("2 processed")
    store = receiver.get_store(app)
    assert {e.status for e in store.events()} == {EventStatus.PROCESSED}
    outcome = store.get("paid-1")
    assert outcome is not None and outcome.handlers["ledger"].attempts == 1, "what succeeded did not run again"
    assert outcome.handlers["warehouse"].attempts == 3, "run on delivery, by the failing replay, then by this one"
    assert runner.invoke(webhooks_cli, ["replay"]).exit_code == 2

    assert runner.invoke(webhooks_cli, ["prune", "--older-than", "1d"]).output.strip() == "pruned 0 events"
    dry = runner.invoke(webhooks_cli, ["prune", "--older-than", "0s", "--dry-run"])
    assert dry.output.strip() == "would prune 4 events" and len(store.events()) == 4
    time.sleep(0.05)
    assert runner.invoke(webhooks_cli, ["prune", "--older-than", "0.01s"]).output.strip() == "pruned 4 events"
    assert runner.invoke(webhooks_cli, ["events"]).output.strip() == "no events"
    bad = runner.invoke(webhooks_cli, ["prune", "--older-than", "soon"])
    assert bad.exit_code == 2 and "not a duration" in bad.output


def test_replay_by_filter_dry_run_and_resolve(
    shop: tuple[Flask, dict[str, bool]], send: Any, receiver: WebhookReceiver
) -> None:
    app, broken = shop
    for n in range(3):
        send(make_event("order.paid", event_id=f"paid-{n}"))
    send(make_event("product.deleted", event_id="gone"))
    runner = app.test_cli_runner()
    store = receiver.get_store(app)

    dry = runner.invoke(webhooks_cli, ["replay", "--since", "2h", "--trigger", "order.*", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    lines = dry.output.splitlines()
    assert lines[0].startswith("would replay 3 order.* events received since ") and lines[0].endswith(":")
    assert [line.strip() for line in lines[1:]] == ["paid-2", "paid-1", "paid-0"]
    assert all(e.attempts == 1 for e in store.events()), "a dry run runs nothing"
    none = runner.invoke(webhooks_cli, ["replay", "--trigger", "product.*", "--dry-run"])
    assert none.output.strip().startswith("would replay 0 product.* events")

    resolved = runner.invoke(webhooks_cli, ["resolve", "paid-0"])
    assert resolved.exit_code == 0 and resolved.output.strip() == "event paid-0 resolved"
    again = runner.invoke(webhooks_cli, ["resolve", "paid-0"])
    assert again.exit_code == 1 and "is resolved, not failed" in again.output
    assert runner.invoke(webhooks_cli, ["resolve", "gone"]).exit_code == 1
    missing = runner.invoke(webhooks_cli, ["resolve", "nope"])
    assert missing.exit_code == 1 and "no stored event" in missing.output
    listed = runner.invoke(webhooks_cli, ["events", "--status", "resolved"])
    assert [line.split()[2] for line in listed.output.splitlines()[1:]] == ["paid-0"]

    broken["on"] = False
    replayed = runner.invoke(webhooks_cli, ["replay", "--trigger", "order.*"])
    assert replayed.exit_code == 0 and replayed.output.strip().endswith("2 processed"), "the resolved one is left"
    stored = store.get("paid-0")
    assert stored is not None and stored.status is EventStatus.RESOLVED and stored.attempts == 1
    assert runner.invoke(webhooks_cli, ["replay", "paid-0", "--trigger", "order.*"]).exit_code == 2
    assert runner.invoke(webhooks_cli, ["prune", "--older-than", "0s"]).output.strip() == "pruned 3 events"
    assert store.get("paid-0") is not None, "a resolved event is pruned only with --include-failed"


def test_listen_shows_an_event_resolved_while_it_watches(
    shop: tuple[Flask, dict[str, bool]], send: Any, receiver: WebhookReceiver
) -> None:
    import threading

    app, _ = shop
    store = receiver.get_store(app)

    def operator() -> None:  # a second each way: listen starts, and sees the failure, on a loaded machine too
        time.sleep(1.0)
        send(make_event("order.paid", event_id="to-resolve"))
        time.sleep(1.0)
        assert store.resolve("to-resolve")

    thread = threading.Thread(target=operator)
    thread.start()
    result = app.test_cli_runner().invoke(webhooks_cli, ["listen", "--interval", "0.05", "--seconds", "3.5"])
    thread.join()
    assert result.exit_code == 0, result.output
    assert "500 failed" in result.output and "resolved by an operator" in result.output


def test_untrusted_text_reaches_no_terminal_or_log_raw(app: Flask, receiver: WebhookReceiver, send: Any) -> None:
    """A handler error, an id stored by an older version and a log line carry control characters:
    every one is escaped in the CLI's tables and in the log file."""
    import io
    import logging

    @receiver.on("order.paid", name="evil")
    def evil(event: Event) -> None:
        raise ValueError("boom\r\n2026-11-30 INFO forged line\x1b[2J")

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("webhook_receiver")
    logger.addHandler(handler)
    try:
        send(make_event("order.paid", event_id="e-evil"))
    finally:
        logger.removeHandler(handler)
    written = stream.getvalue()
    assert "\x1b" not in written and "\r" not in written
    assert "forged line\\x1b[2J" in written, "escaped, not dropped"
    assert "\n2026-11-30 INFO forged" not in written, "no line was forged"

    store = receiver.get_store(app)
    store.accept(Event(id="old\x1b]0;pwned\x07", trigger="order.paid", raw={"id": "old"}))
    runner = app.test_cli_runner()
    listed = runner.invoke(webhooks_cli, ["events"]).output
    shown = runner.invoke(webhooks_cli, ["show", "e-evil"]).output
    for output in (listed, shown):
        assert not any(ch in output for ch in "\x1b\x07\r"), output
    assert "old\\x1b]0;pwned\\x07" in listed
    assert "boom\\r\\n2026-11-30 INFO forged line\\x1b[2J" in shown, shown.splitlines()[2]


@pytest.mark.parametrize("as_json", [False, True])
def test_listen_shows_deliveries_as_they_land(shop: tuple[Flask, dict[str, bool]], send: Any, as_json: bool) -> None:
    import threading

    app, _ = shop

    def upstream() -> None:
        time.sleep(1.0)  # listen has started by then, on a loaded machine too
        send(make_event("order.paid", event_id="live-paid", attempt=1))
        time.sleep(0.5)  # upstream's retry, a while later: the handlers' time is not the time since the first
        send(make_event("order.paid", event_id="live-paid", attempt=2))
        send(make_event("product.deleted", event_id="live-gone"))

    before = make_event("product.deleted", event_id="before")
    send(before)  # received before listen started: not shown
    sender = threading.Thread(target=upstream)
    sender.start()
    args = ["listen", "--interval", "0.05", "--seconds", "3.5", *(["--json"] if as_json else [])]
    result = app.test_cli_runner().invoke(webhooks_cli, args)
    sender.join()
    assert result.exit_code == 0, result.output
    # A look may land while a handler runs: such a line says "running"; the finished ones follow.
    if as_json:
        changes = [json.loads(line) for line in result.output.splitlines()]
        final = [(c["id"], c["answer"], c["attempt"]) for c in changes if c["answer"] != "... running"]
        assert final == [
            ("live-paid", "500 failed", 1),
            ("live-paid", "500 failed", 2),
            ("live-gone", "200 processed", 1),
        ]
        stored = app.extensions["webhook_receiver.receivers"]["moltin"].get_store(app).get("live-paid")
        ran = [stored.handlers[name] for name in stored.handlers if "warehouse" in name]
        last = [c for c in changes if c["id"] == "live-paid" and c["attempt"] == 2 and c["answer"] != "... running"]
        assert last[0]["took_ms"] == (ran[0].finished_at - ran[0].started_at) * 1000, "the handler's own time"
        return
    banner, *lines = result.output.splitlines()
    first, second, gone = [line for line in lines if "... running" not in line]
    assert banner.startswith("listening for deliveries to memory store")
    assert first.startswith("--> order.paid live-paid attempt 1  <-- 500 failed ")
    assert "ledger ok, warehouse failed (ConnectionError: warehouse API down)" in first
    assert second.startswith("--> order.paid live-paid attempt 2  <-- 500 failed ")
    assert "warehouse failed" in second and "ledger" not in second, "only the handler that ran again"
    assert gone.startswith("--> product.deleted live-gone attempt 1  <-- 200 processed ") and "warehouse ok" in gone
    assert "before" not in result.output


def test_replay_failed_exits_non_zero_when_some_still_fail(app: Flask, receiver: WebhookReceiver, send: Any) -> None:
    """One of three still failing after a replay: a script checking the exit status must hear of it."""
    failing = {"paid-0", "paid-1", "paid-2"}

    @receiver.on("order.paid", name="warehouse")
    def warehouse(event: Event) -> None:
        if event.id in failing:
            raise ConnectionError("warehouse API down")

    for n in range(3):
        send(make_event("order.paid", event_id=f"paid-{n}"))
    failing.difference_update({"paid-0", "paid-2"})
    runner = app.test_cli_runner()
    some = runner.invoke(webhooks_cli, ["replay", "--failed"])
    assert some.exit_code == 1, some.output
    assert "1 failed, 2 processed" in some.output and "1 replayed event did not succeed" in some.output
    failing.clear()
    rest = runner.invoke(webhooks_cli, ["replay", "--failed"])
    assert rest.exit_code == 0 and rest.output.strip().endswith("1 processed"), rest.output
