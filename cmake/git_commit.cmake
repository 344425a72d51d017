# Writes OUTPUT = '#define SPENSE_GIT_COMMIT "<git describe of SOURCE_DIR>"' (run at every build by
# src/CMakeLists.txt), touching the file only when the text changes, so that a binary always
# reports the commit it was built from and an unchanged commit recompiles nothing.
execute_process(COMMAND git describe --always --dirty --abbrev=12
                WORKING_DIRECTORY ${SOURCE_DIR} OUTPUT_VARIABLE commit
                OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
if(NOT commit)
  set(commit unknown)
endif()
set(text "#define SPENSE_GIT_COMMIT \"${commit}\"\n")
set(old "")
if(EXISTS ${OUTPUT})
  file(READ ${OUTPUT} old)
endif()
if(NOT old STREQUAL text)
  file(WRITE ${OUTPUT} "${text}")
endif()
