// The greeter of docs/bring-your-own-bot.md, in JavaScript: greets whoever it is told to.
// The manager runs it as an `exec` kind (kind.json); @botfleet/runtime speaks the protocol.
import { Bot, run } from '@botfleet/runtime';

class GreeterBot extends Bot {
  async onStart() {
    this.log.info(`greeting with ${JSON.stringify(this.greeting())}`);
    await this.report({ greeting: this.greeting() });
  }

  async onReconfigure(config) {
    await this.report({ greeting: config.greeting ?? 'Hello' });
  }

  async onCommand(action, payload) {
    // The manager has checked the payload against the kind's schema (kind.json) already.
    if (action === 'greet') {
      const mark = this.config.excited ? '!' : '.';
      return { text: `${this.greeting()}, ${payload.name}${mark}` };
    }
    return super.onCommand(action, payload); // fails the command: unknown_action
  }

  greeting() {
    return this.config.greeting ?? 'Hello';
  }
}

await run(GreeterBot);
