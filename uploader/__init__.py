"""Upload of sealed segments to central storage: journal, storage backends, the background uploader.

Never imports Qt or ``ui``; may import station's leaf modules (errors, clock, policy, secrets, logs).
"""
