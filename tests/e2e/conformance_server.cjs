// A reference MCP server over stdio that implements the fixtures of the official conformance suite's server
// scenarios (`@modelcontextprotocol/conformance`, see tests/conformance.rs), written with the official
// TypeScript SDK (`@modelcontextprotocol/sdk`). `failcore proxy --listen` starts it as its server, and the
// suite drives the proxy over Streamable HTTP: what the suite sees is the proxy's transport and relay in
// front of a server that does everything the suite asks.
//
// Usage: node conformance_server.cjs <node_modules directory holding @modelcontextprotocol/sdk>
'use strict';

const path = require('node:path');
const { createRequire } = require('node:module');

const modules = process.argv[2];
if (!modules) {
  process.stderr.write('usage: conformance_server.cjs <node_modules directory>\n');
  process.exit(2);
}
const sdk = createRequire(path.join(modules, 'noop.js'));
const { Server } = sdk('@modelcontextprotocol/sdk/server/index.js');
const { StdioServerTransport } = sdk('@modelcontextprotocol/sdk/server/stdio.js');
const types = sdk('@modelcontextprotocol/sdk/types.js');

// A 1x1 PNG and a tiny WAV, base64.
const PNG =
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==';
const WAV = 'UklGRiQAAABXQVZFZm10IBAAAAABAAEAQB8AAEAfAAABAAgAZGF0YQAAAAA=';

const noArgs = { type: 'object', properties: {} };
const tools = [
  ['test_simple_text', 'Returns simple text', noArgs],
  ['test_image_content', 'Returns an image', noArgs],
  ['test_audio_content', 'Returns audio', noArgs],
  ['test_embedded_resource', 'Returns an embedded resource', noArgs],
  ['test_multiple_content_types', 'Returns text, an image and a resource', noArgs],
  ['test_tool_with_logging', 'Sends three log messages while it runs', noArgs],
  ['test_tool_with_progress', 'Reports progress while it runs', noArgs],
  ['test_error_handling', 'Always fails', noArgs],
  [
    'test_sampling',
    'Asks the client for a completion',
    { type: 'object', properties: { prompt: { type: 'string' } }, required: ['prompt'] },
  ],
  [
    'test_elicitation',
    'Asks the user for input',
    { type: 'object', properties: { message: { type: 'string' } }, required: ['message'] },
  ],
  ['test_elicitation_sep1034_defaults', 'Elicitation with a default for every primitive type', noArgs],
  ['test_elicitation_sep1330_enums', 'Elicitation with every enum form', noArgs],
  ['test_reconnection', 'Answers after a pause (the HTTP side may close and resume its stream)', noArgs],
  [
    'json_schema_2020_12_tool',
    'Tool with JSON Schema 2020-12 features',
    {
      $schema: 'https://json-schema.org/draft/2020-12/schema',
      type: 'object',
      $defs: {
        address: {
          type: 'object',
          properties: { street: { type: 'string' }, city: { type: 'string' } },
        },
      },
      properties: { name: { type: 'string' }, address: { $ref: '#/$defs/address' } },
      additionalProperties: false,
    },
  ],
].map(([name, description, inputSchema]) => ({ name, description, inputSchema }));

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const text = (t) => ({ content: [{ type: 'text', text: t }] });

const server = new Server(
  { name: 'failcore-conformance-reference', version: '1.0.0' },
  {
    capabilities: {
      tools: {},
      resources: { subscribe: true },
      prompts: {},
      logging: {},
      completions: {},
    },
  },
);

server.setRequestHandler(types.ListToolsRequestSchema, async () => ({ tools }));

async function elicit(extra, message, requestedSchema) {
  return extra.sendRequest(
    { method: 'elicitation/create', params: { message, requestedSchema } },
    types.ElicitResultSchema,
  );
}

server.setRequestHandler(types.CallToolRequestSchema, async (request, extra) => {
  const args = request.params.arguments || {};
  switch (request.params.name) {
    case 'test_simple_text':
      return text('This is a simple text response for testing.');
    case 'test_image_content':
      return { content: [{ type: 'image', data: PNG, mimeType: 'image/png' }] };
    case 'test_audio_content':
      return { content: [{ type: 'audio', data: WAV, mimeType: 'audio/wav' }] };
    case 'test_embedded_resource':
      return {
        content: [
          {
            type: 'resource',
            resource: {
              uri: 'test://embedded-resource',
              mimeType: 'text/plain',
              text: 'This is an embedded resource content.',
            },
          },
        ],
      };
    case 'test_multiple_content_types':
      return {
        content: [
          { type: 'text', text: 'Multiple content types test:' },
          { type: 'image', data: PNG, mimeType: 'image/png' },
          {
            type: 'resource',
            resource: {
              uri: 'test://mixed-content-resource',
              mimeType: 'application/json',
              text: JSON.stringify({ test: 'data', value: 123 }),
            },
          },
        ],
      };
    case 'test_tool_with_logging': {
      const log = (data) =>
        extra.sendNotification({ method: 'notifications/message', params: { level: 'info', data } });
      await log('Tool execution started');
      await sleep(50);
      await log('Tool processing data');
      await sleep(50);
      await log('Tool execution completed');
      return text('Tool with logging executed successfully');
    }
    case 'test_tool_with_progress': {
      const token = request.params._meta && request.params._meta.progressToken;
      for (const progress of [0, 50, 100]) {
        if (token !== undefined) {
          await extra.sendNotification({
            method: 'notifications/progress',
            params: { progressToken: token, progress, total: 100, message: `Completed ${progress}%` },
          });
        }
        if (progress < 100) await sleep(50);
      }
      return text('Tool with progress executed successfully');
    }
    case 'test_error_handling':
      return { isError: true, content: [{ type: 'text', text: 'This tool intentionally returns an error for testing' }] };
    case 'test_sampling': {
      const result = await extra.sendRequest(
        {
          method: 'sampling/createMessage',
          params: {
            messages: [{ role: 'user', content: { type: 'text', text: String(args.prompt) } }],
            maxTokens: 100,
          },
        },
        types.CreateMessageResultSchema,
      );
      const reply = result.content && result.content.type === 'text' ? result.content.text : JSON.stringify(result.content);
      return text(`LLM response: ${reply}`);
    }
    case 'test_elicitation': {
      const result = await elicit(extra, String(args.message), {
        type: 'object',
        properties: {
          username: { type: 'string', description: "User's response" },
          email: { type: 'string', description: "User's email address" },
        },
        required: ['username', 'email'],
      });
      return text(`User response: action=${result.action}, content=${JSON.stringify(result.content || {})}`);
    }
    case 'test_elicitation_sep1034_defaults': {
      const result = await elicit(extra, 'Please review and update the form fields with defaults', {
        type: 'object',
        properties: {
          name: { type: 'string', description: 'User name', default: 'John Doe' },
          age: { type: 'integer', description: 'User age', default: 30 },
          score: { type: 'number', description: 'User score', default: 95.5 },
          status: {
            type: 'string',
            description: 'User status',
            enum: ['active', 'inactive', 'pending'],
            default: 'active',
          },
          verified: { type: 'boolean', description: 'Verification status', default: true },
        },
        required: [],
      });
      return text(`Elicitation completed: action=${result.action}, content=${JSON.stringify(result.content || {})}`);
    }
    case 'test_elicitation_sep1330_enums': {
      const result = await elicit(extra, 'Please select options from the enum fields', {
        type: 'object',
        properties: {
          untitledSingle: { type: 'string', description: 'Untitled single-select', enum: ['option1', 'option2', 'option3'] },
          titledSingle: {
            type: 'string',
            description: 'Titled single-select',
            oneOf: [
              { const: 'value1', title: 'First Option' },
              { const: 'value2', title: 'Second Option' },
              { const: 'value3', title: 'Third Option' },
            ],
          },
          legacyEnum: {
            type: 'string',
            description: 'Legacy titled enum',
            enum: ['opt1', 'opt2', 'opt3'],
            enumNames: ['Option One', 'Option Two', 'Option Three'],
          },
          untitledMulti: {
            type: 'array',
            description: 'Untitled multi-select',
            items: { type: 'string', enum: ['option1', 'option2', 'option3'] },
          },
          titledMulti: {
            type: 'array',
            description: 'Titled multi-select',
            items: {
              anyOf: [
                { const: 'value1', title: 'First Choice' },
                { const: 'value2', title: 'Second Choice' },
                { const: 'value3', title: 'Third Choice' },
              ],
            },
          },
        },
        required: [],
      });
      return text(`Elicitation completed: action=${result.action}, content=${JSON.stringify(result.content || {})}`);
    }
    case 'test_reconnection':
      await sleep(100);
      return text('Reconnection test completed successfully');
    case 'json_schema_2020_12_tool':
      return text(`Received: ${JSON.stringify(args)}`);
    default:
      throw new types.McpError(types.ErrorCode.InvalidParams, `unknown tool: ${request.params.name}`);
  }
});

const resources = [
  { uri: 'test://static-text', name: 'static-text', description: 'A static text resource', mimeType: 'text/plain' },
  { uri: 'test://static-binary', name: 'static-binary', description: 'A static binary resource', mimeType: 'image/png' },
  { uri: 'test://watched-resource', name: 'watched-resource', description: 'A resource to subscribe to', mimeType: 'text/plain' },
];
server.setRequestHandler(types.ListResourcesRequestSchema, async () => ({ resources }));
server.setRequestHandler(types.ListResourceTemplatesRequestSchema, async () => ({
  resourceTemplates: [
    {
      uriTemplate: 'test://template/{id}/data',
      name: 'template',
      description: 'A resource template with an id',
      mimeType: 'application/json',
    },
  ],
}));
server.setRequestHandler(types.ReadResourceRequestSchema, async (request) => {
  const uri = request.params.uri;
  if (uri === 'test://static-text') {
    return { contents: [{ uri, mimeType: 'text/plain', text: 'This is the content of the static text resource.' }] };
  }
  if (uri === 'test://static-binary') {
    return { contents: [{ uri, mimeType: 'image/png', blob: PNG }] };
  }
  if (uri === 'test://watched-resource') {
    return { contents: [{ uri, mimeType: 'text/plain', text: 'Watched resource content.' }] };
  }
  const templated = /^test:\/\/template\/([^/]+)\/data$/.exec(uri);
  if (templated) {
    const id = templated[1];
    return {
      contents: [
        { uri, mimeType: 'application/json', text: JSON.stringify({ id, templateTest: true, data: `Data for ID: ${id}` }) },
      ],
    };
  }
  throw new types.McpError(types.ErrorCode.InvalidParams, `no such resource: ${uri}`);
});
const subscriptions = new Set();
server.setRequestHandler(types.SubscribeRequestSchema, async (request) => {
  subscriptions.add(request.params.uri);
  return {};
});
server.setRequestHandler(types.UnsubscribeRequestSchema, async (request) => {
  subscriptions.delete(request.params.uri);
  return {};
});

const prompts = [
  { name: 'test_simple_prompt', description: 'A prompt without arguments' },
  {
    name: 'test_prompt_with_arguments',
    description: 'A prompt with two arguments',
    arguments: [
      { name: 'arg1', description: 'First test argument', required: true },
      { name: 'arg2', description: 'Second test argument', required: true },
    ],
  },
  {
    name: 'test_prompt_with_embedded_resource',
    description: 'A prompt embedding a resource',
    arguments: [{ name: 'resourceUri', description: 'URI of the resource to embed', required: true }],
  },
  { name: 'test_prompt_with_image', description: 'A prompt with an image' },
];
server.setRequestHandler(types.ListPromptsRequestSchema, async () => ({ prompts }));
server.setRequestHandler(types.GetPromptRequestSchema, async (request) => {
  const args = request.params.arguments || {};
  const user = (content) => ({ role: 'user', content });
  switch (request.params.name) {
    case 'test_simple_prompt':
      return { messages: [user({ type: 'text', text: 'This is a simple prompt for testing.' })] };
    case 'test_prompt_with_arguments':
      return {
        messages: [user({ type: 'text', text: `Prompt with arguments: arg1='${args.arg1}', arg2='${args.arg2}'` })],
      };
    case 'test_prompt_with_embedded_resource':
      return {
        messages: [
          user({
            type: 'resource',
            resource: { uri: args.resourceUri, mimeType: 'text/plain', text: 'Embedded resource content for testing.' },
          }),
          user({ type: 'text', text: 'Please process the embedded resource above.' }),
        ],
      };
    case 'test_prompt_with_image':
      return {
        messages: [
          user({ type: 'image', data: PNG, mimeType: 'image/png' }),
          user({ type: 'text', text: 'Please analyze the image above.' }),
        ],
      };
    default:
      throw new types.McpError(types.ErrorCode.InvalidParams, `no such prompt: ${request.params.name}`);
  }
});

server.setRequestHandler(types.CompleteRequestSchema, async (request) => {
  const prefix = String((request.params.argument && request.params.argument.value) || '');
  const values = ['test', 'testing', 'tested'].filter((v) => v.startsWith(prefix));
  return { completion: { values, total: values.length, hasMore: false } };
});

server.setRequestHandler(types.SetLevelRequestSchema, async () => ({}));

server.connect(new StdioServerTransport()).catch((e) => {
  process.stderr.write(`conformance_server: ${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
