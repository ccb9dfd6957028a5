// Drives the official @moltin/sdk against the emulator: authenticate, create,
// list, get, update, read logs, delete. Prints one JSON line per step; any
// rejection exits non-zero with what the SDK saw.
const { gateway, MemoryStorageFactory } = require('@moltin/sdk')

const [host, clientId, clientSecret, hookUrl] = process.argv.slice(2)
const Moltin = gateway({
  client_id: clientId,
  client_secret: clientSecret,
  host,
  protocol: 'http',
  storage: new MemoryStorageFactory(),
  fetchMaxAttempts: 1
})

const step = (name, value) => console.log(JSON.stringify({ step: name, value }))

async function main () {
  const auth = await Moltin.Authenticate()
  step('authenticate', { token_type: auth.token_type, expires_in: auth.expires_in })
  const created = await Moltin.Integrations.Create({
    name: 'sdk-check',
    description: 'made by the official SDK',
    enabled: true,
    integration_type: 'webhook',
    observes: ['order.paid'],
    configuration: { url: hookUrl, secret_key: 'sdk-secret' }
  })
  step('create', created.data)
  const all = await Moltin.Integrations.All()
  step('list', { ids: all.data.map(i => i.id), total: all.meta.results.total })
  const one = await Moltin.Integrations.Get(created.data.id)
  step('get', { id: one.data.id, name: one.data.name })
  const updated = await Moltin.Integrations.Update(created.data.id, { observes: ['order.paid', 'order.fulfilled'], enabled: false })
  step('update', { observes: updated.data.observes, enabled: updated.data.enabled })
  const logs = await Moltin.Integrations.GetLogs(created.data.id)
  step('logs', { count: logs.data.length })
  const jobs = await Moltin.Integrations.GetJobs(created.data.id)
  step('jobs', { count: jobs.data.length })
  await Moltin.Integrations.Delete(created.data.id)
  const after = await Moltin.Integrations.All()
  step('delete', { remaining: after.data.length })
  try {
    await Moltin.Integrations.Get(created.data.id)
    step('get-deleted', { status: 200 })
  } catch (error) {
    step('get-deleted', error)
  }
}

main().catch(error => {
  console.error(JSON.stringify({ failed: error && (error.errors || error.message || error) }))
  process.exit(1)
})
