"""SAT Studio's Gradio app: `studio.inference` (models, captions, overlays, no UI),
`studio.ui` (`create_app`, `serve`, the handlers) and `studio.layout` (components and events);
`studio.server` starts and stops `python app.py` for the tests and benchmarks (standard library only).

Nothing is imported eagerly: `import studio` does no work; `from studio.ui import create_app`
imports Gradio.
"""
