"""SAT Studio's Gradio app: `studio.inference` (models, captions, overlays, no UI),
`studio.ui` (`create_app`, `serve`, the handlers), `studio.layout` (components and events) and
`studio.components` (the input components, the API's one-line errors);
`studio.server` starts and stops `python app.py` for the tests and benchmarks (standard library only).

Nothing is imported eagerly: `import studio` does no work; `from studio.ui import create_app`
imports Gradio.
"""
