// Sends the six calls of fixture.json through @segment/analytics-node.
//
// Usage: node segment_node.mjs HOST WRITEKEY RUNID
// Prints `SPOOR_SDK_SENT <json>` and exits non-zero on any delivery error (3: not installed).
import { parseArgs, loadCalls, importOrExit, deadline, report } from './common.mjs'

const LIBRARY = '@segment/analytics-node'
const PREFIX = 'sn'

const { host, writeKey, runId } = parseArgs('segment_node.mjs')
const { Analytics } = await importOrExit(LIBRARY)
deadline(90_000, LIBRARY)

const calls = loadCalls(`${PREFIX}-${runId}`)
const errors = []

const analytics = new Analytics({
  writeKey,
  host,
  flushAt: 100, // one batch for all six, sent by closeAndFlush()
  flushInterval: 60_000,
  maxRetries: 2,
  httpRequestTimeout: 10_000,
})

let responses = 0
analytics.on('http_response', (r) => {
  responses++
  // The library counts any 2xx/3xx as delivered; Segment's API answers 200, so must Spoor.
  if (r.status !== 200) errors.push(`HTTP ${r.status} ${r.statusText} from ${r.url}`)
})
analytics.on('error', (e) => errors.push(`${e.code}: ${e.reason?.message ?? e.reason}`))

let completed = 0
const cb = (what) => (err) => {
  completed++
  if (err) errors.push(`${what}: ${err.message ?? err}`)
}

for (const c of calls) {
  const ids = { userId: c.userId, anonymousId: c.anonymousId }
  switch (c.type) {
    case 'identify':
      analytics.identify({ ...ids, traits: c.traits }, cb('identify'))
      break
    case 'track':
      analytics.track(
        {
          ...ids,
          event: c.event,
          properties: c.properties,
          ...(c.timestamp ? { timestamp: new Date(c.timestamp) } : {}),
        },
        cb('track')
      )
      break
    case 'page':
      analytics.page({ ...ids, name: c.name, properties: c.properties }, cb('page'))
      break
    case 'screen':
      analytics.screen({ ...ids, name: c.name, properties: c.properties }, cb('screen'))
      break
    case 'group':
      analytics.group({ ...ids, groupId: c.groupId, traits: c.traits }, cb('group'))
      break
    case 'alias':
      analytics.alias({ userId: c.userId, previousId: c.previousId }, cb('alias'))
      break
    default:
      throw new Error(`fixture has unknown call type ${c.type}`)
  }
}

await analytics.closeAndFlush({ timeout: 60_000 })
if (responses === 0) errors.push('no HTTP response was received')
if (completed !== calls.length) errors.push(`only ${completed} of ${calls.length} calls completed`)

report({ library: LIBRARY, prefix: PREFIX, runId, calls, errors })
