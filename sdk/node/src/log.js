// Log lines on stderr, in the shape the Python runtime writes them: the manager keeps a bot's
// output as its log (GET /bots/{id}/logs).
const LEVELS = { debug: 'DEBUG', info: 'INFO', warn: 'WARNING', error: 'ERROR' };

export function makeLogger(name, { write = (line) => process.stderr.write(line) } = {}) {
  const logger = {};
  for (const [method, level] of Object.entries(LEVELS)) {
    logger[method] = (...parts) => {
      if (method === 'debug' && !process.env.BOTFLEET_DEBUG) return;
      write(`${new Date().toISOString()} ${level} ${name}: ${parts.join(' ')}\n`);
    };
  }
  logger.log = logger.info;
  return logger;
}
