"""Placeholder until the models are trained: a page that says so."""

import gradio as gr

with gr.Blocks(title="Breast ultrasound analysis") as demo:
    gr.Markdown("# Breast ultrasound analysis\nThe models are not trained yet. Research demo — not a medical device.")

if __name__ == "__main__":
    demo.launch()
