"""Draw a simple logo for ``d2im paste``: text in a rounded frame, black on a transparent background.

``python tools/make_logo.py OUT.png [--text D2IM] [--size 96] [--badge]`` — the logos of
docs/applications.md. ``--badge``: a filled rounded rectangle with the text cut out of it.
"""

from __future__ import annotations

import argparse

from PIL import Image, ImageDraw, ImageFont


def logo(text: str, size: int, badge: bool = False) -> Image.Image:
    """An RGBA image about ``size`` wide: ``text`` inside a rounded rectangle, both black, the rest
    transparent; with ``badge`` the rectangle is filled and the text transparent."""
    font = ImageFont.load_default(size=size // max(len(text), 1) * 1.6)
    box = ImageDraw.Draw(Image.new("RGBA", (1, 1))).textbbox((0, 0), text, font=font)
    width, height = box[2] - box[0], box[3] - box[1]
    margin = size // 12
    image = Image.new("RGBA", (width + 4 * margin, height + 4 * margin), (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    frame = [margin // 2, margin // 2, image.width - margin // 2, image.height - margin // 2]
    black, clear = (0, 0, 0, 255), (0, 0, 0, 0)
    draw.rounded_rectangle(
        frame, radius=2 * margin, outline=black, width=max(2, margin // 2), fill=black if badge else None
    )
    draw.text((2 * margin - box[0], 2 * margin - box[1]), text, font=font, fill=clear if badge else black)
    return image


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="PNG file to write")
    parser.add_argument("--text", default="D2IM")
    parser.add_argument("--size", type=int, default=96, help="about the text's width in pixels")
    parser.add_argument("--badge", action="store_true", help="a filled rectangle with the text cut out")
    args = parser.parse_args(argv)
    logo(args.text, args.size, args.badge).save(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
