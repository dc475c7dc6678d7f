// The official TypeScript MCP SDK's client (`@modelcontextprotocol/sdk`) through every kind of request a
// server answers: the tools (with progress, and the sampling, elicitation and roots requests a tool makes
// of the client), resources and templates, prompts and a completion. Prints one JSON object, with clock
// times, timestamps and random ids masked, so that two surveys of one server compare equal. The same
// survey as tests/e2e/mcp_clients.py `survey` (the Python SDK's), for tests/proxy_protocol.rs.
//
// Usage: node ts_survey.cjs <node_modules directory holding @modelcontextprotocol/sdk> <json config>
//   config: {"command": ..., "args": [...], "calls": [[tool, arguments], ...], "tools_only": bool}
'use strict';

const path = require('node:path');
const { createRequire } = require('node:module');

const [modules, configText] = process.argv.slice(2);
if (!modules || !configText) {
  process.stderr.write('usage: ts_survey.cjs <node_modules directory> <json config>\n');
  process.exit(2);
}
const sdk = createRequire(path.join(modules, 'noop.js'));
const { Client } = sdk('@modelcontextprotocol/sdk/client/index.js');
const { StdioClientTransport } = sdk('@modelcontextprotocol/sdk/client/stdio.js');
const types = sdk('@modelcontextprotocol/sdk/types.js');

/// The value with object keys sorted, so that the printed JSON does not depend on their order.
function sorted(value) {
  if (Array.isArray(value)) return value.map(sorted);
  if (value && typeof value === 'object') {
    const out = {};
    for (const key of Object.keys(value).sort()) {
      if (value[key] !== undefined) out[key] = sorted(value[key]);
    }
    return out;
  }
  return value;
}

function masked(value) {
  let text = JSON.stringify(sorted(value));
  text = text.replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)?/g, '<time>');
  text = text.replace(/\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b/g, '<uuid>');
  text = text.replace(/\b[0-9a-f]{32}\b/g, '<id>');
  text = text.replace(/\b\d{1,2}:\d\d:\d\d( [AP]M)?/g, '<clock>');
  return JSON.parse(text);
}

async function main() {
  const cfg = JSON.parse(configText);
  const client = new Client(
    { name: 'ts-survey', version: '0' },
    { capabilities: { sampling: {}, elicitation: {}, roots: { listChanged: false } } },
  );
  client.setRequestHandler(types.CreateMessageRequestSchema, async (request) => ({
    role: 'assistant',
    content: { type: 'text', text: 'sampled: ' + request.params.messages[0].content.text },
    model: 'scripted',
    stopReason: 'endTurn',
  }));
  client.setRequestHandler(types.ElicitRequestSchema, async () => ({
    action: 'accept',
    content: { color: 'blue', name: 'Ada' },
  }));
  client.setRequestHandler(types.ListRootsRequestSchema, async () => ({
    roots: [{ uri: 'file:///data', name: 'data' }],
  }));
  const transport = new StdioClientTransport({
    command: cfg.command,
    args: cfg.args,
    stderr: 'ignore',
  });
  await client.connect(transport);
  const out = {};
  out.server = client.getServerVersion();
  out.tools = (await client.listTools()).tools;
  out.calls = [];
  for (const [name, args] of cfg.calls) {
    const progress = [];
    const result = await client.callTool({ name, arguments: args }, undefined, {
      onprogress: (p) => progress.push([p.progress, p.total]),
    });
    out.calls.push({ tool: name, result, progress });
  }
  if (!cfg.tools_only) {
    const resources = (await client.listResources()).resources;
    out.resources = resources;
    out.templates = (await client.listResourceTemplates()).resourceTemplates;
    out.read = [];
    for (const r of resources.slice(0, 3)) {
      out.read.push(await client.readResource({ uri: r.uri }));
    }
    out.prompts = (await client.listPrompts()).prompts;
    out.prompt = await client.getPrompt({ name: 'simple-prompt' });
    out.args_prompt = await client.getPrompt({
      name: 'args-prompt',
      arguments: { city: 'Paris', state: 'TX' },
    });
    out.completion = await client.complete({
      ref: { type: 'ref/prompt', name: 'completable-prompt' },
      argument: { name: 'department', value: 'E' },
    });
  }
  await client.close();
  process.stdout.write(JSON.stringify(masked(out)) + '\n');
}

main().catch((e) => {
  process.stderr.write(String((e && e.stack) || e) + '\n');
  process.exit(1);
});
