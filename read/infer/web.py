"""The web demo (optional extra ``demo``: Gradio): upload an image, ask a question, see the answer, the overlay
(masks + SasP points) and the [SEG] heat-map. ``scripts/web_demo.py`` starts it; ``tests/test_web_demo.py``
drives it in headless Chromium.

Everything runs on the machine that serves the page; nothing is sent anywhere else (Gradio's analytics are off).
"""

from __future__ import annotations

import os

import numpy as np

from read.infer.pipeline import ReadPipeline

__all__ = ["build_app", "respond"]

INSTALL_HINT = "pip install -e '.[demo]'  (Gradio)"


def respond(pipe: ReadPipeline, image: np.ndarray | None, question: str, show_points: bool
            ) -> tuple[str, np.ndarray | None, np.ndarray | None]:
    """One request: ``(answer text, overlay RGB, heat-map RGB)``; a missing image or question is said in the answer
    box (no picture) instead of raising into the page."""
    if image is None:
        return "Upload an image first.", None, None
    if not (question or "").strip():
        return "Type a question first.", None, None
    pred = pipe.predict(image, question.strip())
    status = f"{len(pred.masks)} [SEG]" if pred.has_seg else "no [SEG]: nothing segmented"
    overlay = pred.render(show_points=show_points, panels="left", titled=False)
    heat = pred.render(panels="right", titled=False) if pred.similarity else None
    return f"{pred.text}\n\n({status})", overlay, heat


def build_app(pipe: ReadPipeline, *, title: str = "READ: reasoning segmentation"):  # noqa: ANN201 - gr.Blocks
    """The Gradio ``Blocks`` page for ``pipe`` (not launched)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    try:
        import gradio as gr
    except ImportError as exc:
        raise ImportError(f"the web demo needs Gradio: {INSTALL_HINT}") from exc

    with gr.Blocks(title=title, analytics_enabled=False) as app:
        gr.Markdown(f"## {title}\nUpload an image, ask about it; the model answers and segments what it names "
                    "with [SEG]. Heat-map: similarity of the [SEG] state to the image tokens (grey: outside the "
                    "square CLIP sees).")
        with gr.Row():
            with gr.Column():
                image = gr.Image(type="numpy", label="image", elem_id="read-image")
                question = gr.Textbox(label="question", elem_id="read-question",
                                      placeholder="What can hold water? Please output segmentation mask.")
                points = gr.Checkbox(value=True, label="points", elem_id="read-points")
                ask = gr.Button("Ask", variant="primary", elem_id="read-ask")
            with gr.Column():
                answer = gr.Textbox(label="answer", elem_id="read-answer", interactive=False)
                overlay = gr.Image(label="overlay", elem_id="read-overlay", interactive=False)
                heat = gr.Image(label="heat-map", elem_id="read-heat", interactive=False)

        def run(img, q, show):  # noqa: ANN001, ANN202
            return respond(pipe, img, q, bool(show))

        ask.click(run, inputs=[image, question, points], outputs=[answer, overlay, heat])
        question.submit(run, inputs=[image, question, points], outputs=[answer, overlay, heat])
    return app
