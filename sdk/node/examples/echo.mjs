#!/usr/bin/env node
// A Node bot for botfleet: answers `echo` (its payload back) and `count` (how many commands it
// has answered), reports what it is doing, and takes a new config. Register it as an exec kind:
//   POST /admin/kinds {"name": "node-echo", "run": {"exec": ["node", "<path>/examples/echo.mjs"]},
//                      "commands": {"echo": {"type": "object"}, "count": {"type": "object"}}}
import { Bot, BotFailed, run } from '@botfleet/runtime';

class EchoBot extends Bot {
  answered = 0;

  async onStart() {
    if (this.config.fail_on_start) throw new BotFailed('echo_refused', 'told to fail on start');
    this.log.info(`started with greeting ${JSON.stringify(this.config.greeting ?? 'hello')}`);
    await this.report({ phase: 'started', greeting: this.config.greeting ?? 'hello' });
  }

  async onReconfigure(config) {
    if (config.refuse) throw new Error('this config is refused');
    await this.report({ phase: 'reconfigured', greeting: config.greeting ?? 'hello' });
  }

  async onCommand(action, payload) {
    if (action === 'echo') {
      this.answered += 1;
      await this.report({ phase: 'answered', answered: this.answered });
      return payload;
    }
    if (action === 'count') return { answered: this.answered };
    return super.onCommand(action, payload); // unknown_action
  }

  async onLeave() {
    this.log.info(`leaving after ${this.answered} answers`);
  }
}

await run(EchoBot);
