"""Google Cloud: Vertex AI requests (built with the google-cloud-aiplatform SDK), images and costs.

Every command builds its requests first, so `--dry-run` prints exactly what would be sent, and the
real run sends those same request objects. Needs: pip install 'sentitune[cloud]'.
"""
