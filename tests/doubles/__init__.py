# TEST DOUBLES for gpuprov's test fleet (never for real hosts). Importable only for
# helpers such as make_image_archive; the doubles themselves run as programs.
