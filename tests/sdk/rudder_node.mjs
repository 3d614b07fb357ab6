// Sends the six calls of fixture.json through @rudderstack/rudder-sdk-node.
//
// Usage: node rudder_node.mjs HOST WRITEKEY RUNID
// The library posts to {dataPlaneUrl}/v1/batch with a gzip body (Content-Encoding: gzip),
// HTTP Basic auth (write key as user) and a batch-level `sentAt`/`timestamp`; each message
// carries `originalTimestamp`, `sentAt`, `channel: "server"` and `_metadata`.
// Prints `SPOOR_SDK_SENT <json>` and exits non-zero on any delivery error (3: not installed).
import { parseArgs, loadCalls, importOrExit, deadline, report } from './common.mjs'

const LIBRARY = '@rudderstack/rudder-sdk-node'
const PREFIX = 'rs'

const { host, writeKey, runId } = parseArgs('rudder_node.mjs')
const { default: Analytics } = await importOrExit(LIBRARY)
deadline(90_000, LIBRARY)

const calls = loadCalls(`${PREFIX}-${runId}`)
const errors = []
const describe = (err) =>
  err?.response
    ? `HTTP ${err.response.status} ${err.response.statusText}: ${JSON.stringify(err.response.data)}`
    : `${err?.code ?? ''} ${err?.message ?? err}`

const client = new Analytics(writeKey, {
  dataPlaneUrl: host,
  flushAt: 100,
  flushInterval: 60_000,
  retryCount: 1,
  logLevel: 'error',
  // Without an errorHandler a failed background flush is an unhandled rejection.
  errorHandler: (err) => errors.push(describe(err)),
})

let completed = 0
const cb = (what) => (err) => {
  completed++
  if (err) errors.push(`${what}: ${describe(err)}`)
}

for (const c of calls) {
  const ids = { userId: c.userId, anonymousId: c.anonymousId }
  const ts = c.timestamp ? { timestamp: new Date(c.timestamp) } : {}
  switch (c.type) {
    case 'identify':
      client.identify({ ...ids, traits: c.traits, ...ts }, cb('identify'))
      break
    case 'track':
      client.track({ ...ids, event: c.event, properties: c.properties, ...ts }, cb('track'))
      break
    case 'page':
      client.page({ ...ids, name: c.name, properties: c.properties, ...ts }, cb('page'))
      break
    case 'screen':
      client.screen({ ...ids, name: c.name, properties: c.properties, ...ts }, cb('screen'))
      break
    case 'group':
      client.group({ ...ids, groupId: c.groupId, traits: c.traits, ...ts }, cb('group'))
      break
    case 'alias':
      client.alias({ userId: c.userId, previousId: c.previousId, ...ts }, cb('alias'))
      break
    default:
      throw new Error(`fixture has unknown call type ${c.type}`)
  }
}

// flush() waits for any in-flight request (the library sends the very first event on its
// own, immediately), then sends the rest; its callback runs after the per-event callbacks.
await new Promise((resolve) => {
  client.flush((err) => {
    if (err) errors.push(`flush: ${describe(err)}`)
    resolve()
  }).catch((err) => {
    errors.push(`flush: ${describe(err)}`)
    resolve()
  })
})
// Per-event callbacks run via setImmediate; let them land.
await new Promise((r) => setImmediate(r))
if (completed !== calls.length) errors.push(`only ${completed} of ${calls.length} calls completed`)

report({ library: LIBRARY, prefix: PREFIX, runId, calls, errors })
