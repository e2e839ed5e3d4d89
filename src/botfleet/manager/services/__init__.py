"""Services: the work behind every request and every background repair.

The convention, which every module here follows:

- A service function takes the `Session` first, then the records it works on (a bot, an id),
  then keyword-only arguments. It reads and writes in that session and never commits, opens a
  session, or touches Redis or an engine.
- The caller owns the transaction: the request's session (`manager/http/deps.py`, one
  transaction per request, committed before the answer is sent), or `unit_of_work` for the
  reconciler and other background work.
- Work with side effects lives in three objects, each with its own job: `BotRequests`
  (`bot_requests.py`, what users ask of their bots), `Launcher` (`launcher.py`, the engine, on
  a thread pool) and `CommandPublisher` (`command_publisher.py`, Redis). Request methods take
  the session the same way and queue the side effect (a publish, a launch, a signal) with
  `after_commit`, so it runs only once the change is committed: database first, as the
  docs/explanation/architecture.md says. Everything that runs after a commit is registered in
  one place: `manager/after_commit.py`.
"""
