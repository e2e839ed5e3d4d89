// @botfleet/runtime: run a bot under a botfleet manager. The protocol it speaks is
// docs/protocol.md in the botfleet repository.
export { Bot, BotFailed, UnknownAction } from './src/bot.js';
export { run } from './src/runner.js';
export {
  ACTION_LEAVE,
  ACTION_RECONFIGURE,
  ACTION_SECRETS,
  MAX_REPORT_BYTES,
  MAX_RESULT_BYTES,
  signingKey,
  verifyMessage,
} from './src/protocol.js';
