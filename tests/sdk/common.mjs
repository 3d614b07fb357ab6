// Shared helpers for the Node client scripts: load fixture.json with {id} resolved, report.
import { readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))

export function parseArgs(script) {
  const args = process.argv.slice(2)
  if (args.length !== 3) {
    console.error(`usage: ${script} HOST WRITEKEY RUNID`)
    process.exit(64)
  }
  const [host, writeKey, runId] = args
  return { host, writeKey, runId }
}

export function loadCalls(ident) {
  const fixture = JSON.parse(readFileSync(join(here, 'fixture.json'), 'utf8'))
  const resolve = (v) => {
    if (typeof v === 'string') return v.replaceAll('{id}', ident)
    if (Array.isArray(v)) return v.map(resolve)
    if (v && typeof v === 'object') {
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, resolve(x)]))
    }
    return v
  }
  return resolve(fixture.calls)
}

// Imports a library, or exits 3 (not installed) so the Rust test can skip with a reason.
export async function importOrExit(name) {
  try {
    return await import(name)
  } catch (e) {
    console.error(`${name} is not installed (run: npm ci --prefix tests/sdk): ${e.message}`)
    process.exit(3)
  }
}

export function packageVersion(name) {
  try {
    return JSON.parse(readFileSync(join(here, 'node_modules', name, 'package.json'), 'utf8')).version
  } catch {
    return null
  }
}

// Fails the script if it has not finished in time (a hung flush must not hang the test).
export function deadline(ms, what) {
  const t = setTimeout(() => {
    console.error(`${what}: did not finish within ${ms / 1000} s`)
    process.exit(2)
  }, ms)
  t.unref()
}

export function report({ library, prefix, runId, calls, errors }) {
  console.log(
    'SPOOR_SDK_SENT ' +
      JSON.stringify({ library, version: packageVersion(library), prefix, run_id: runId, calls })
  )
  if (errors.length) {
    for (const e of errors) console.error(`${library} delivery error: ${e}`)
    process.exit(1)
  }
  process.exit(0)
}
