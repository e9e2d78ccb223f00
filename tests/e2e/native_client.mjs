// The native contract's documented client, type annotations stripped; the last lines
// call it with the URL and headers given on the command line.
async function transcribeRecording(recordingId, apiUrl, headers) {
  const { transcriptionId } = await fetch(`${apiUrl}/v1/recordings/${recordingId}/transcribe`, {
    method: 'POST',
    headers: { ...headers, 'Content-Type': 'application/json' },
    body: JSON.stringify({ language: 'en' }),
  }).then(r => r.json())
  while (true) {
    const result = await fetch(`${apiUrl}/v1/transcriptions/${transcriptionId}`, { headers }).then(r => r.json())
    if (result.status === 'completed') return result
    if (result.status === 'failed') throw new Error('Transcription failed')
    await new Promise(r => setTimeout(r, 3000))
  }
}

const [recordingId, apiUrl, key] = process.argv.slice(2)
transcribeRecording(recordingId, apiUrl, { Authorization: `Bearer ${key}` })
  .then(result => { console.log(JSON.stringify(result)) })
  .catch(err => { console.error(err.message); process.exit(1) })
